"""The run directory (DESIGN.md): everything one training run writes, and how to read it back.

runs/<run>/config.toml     the resolved config (everything needed to rerun)
          checkpoints/     step-*/ (rolling), latest, final/  (safetensors + state.json)
          log.jsonl, tb/   training curves
          results.json     flat namespaced results: train.*, eval.<representation>.<metric>.<key>,
                           and untrained.eval.* for the same network before training
          figures/         reconstructions.png, samples.png, traversals.png, traversals.gif, ...
          report.html      everything above on one page
          .lock            held (flock) by the one process training or evaluating the run (lock.py)

Whoever writes a run directory holds its lock (`RunDir.lock`): `Trainer` and `StackTrainer` for the whole training,
`evaluate_run` for the whole evaluation. Taking the lock also repairs what a killed writer left behind
(`CheckpointDir.recover`, temporary files of atomic writes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import tomli_w
import torch

from untwine.config import TrainConfig
from untwine.data import FactorDataset, dataset_info, get_dataset
from untwine.errors import CheckpointError, InvalidInputError
from untwine.lock import DirectoryLock, storage_error
from untwine.nn import GaussianVAE
from untwine.seeding import make_generator
from untwine.training.checkpoint import CheckpointDir, atomic_write_text, load_weights
from untwine.training.logging import read_jsonl

EVALUATION_PREFIXES = ("eval.", "reference.")  # results computed from the final weights (untrained.* are not)


class RunDir:
    def __init__(self, path: "str | Path | RunDir"):
        self.path = Path(path.path if isinstance(path, RunDir) else path)
        self.config_path = self.path / "config.toml"
        self.checkpoints_dir = self.path / "checkpoints"
        self.log_path = self.path / "log.jsonl"
        self.tb_dir = self.path / "tb"
        self.results_path = self.path / "results.json"
        self.figures_dir = self.path / "figures"
        self.report_path = self.path / "report.html"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> CheckpointDir:
        return CheckpointDir(self.checkpoints_dir)

    def exists(self) -> bool:
        return self.config_path.exists()

    def require(self) -> "RunDir":
        if not self.exists():
            raise InvalidInputError(f"{self.path} is not a run directory (no config.toml)")
        return self

    def config(self) -> TrainConfig:
        return TrainConfig.read(self.require().config_path)

    def read_config(self) -> dict:
        return self.config().model_dump()

    def read_log(self) -> list[dict]:
        return read_jsonl(self.log_path)

    @contextlib.contextmanager
    def lock(self, purpose: str = "working"):
        """Hold the run directory's lock (creating the directory if needed; a RunInUseError naming the holder if
        another process has it), check that the directory is writable, and repair what a killed writer left."""
        with DirectoryLock(self.path, purpose):
            self.check_writable()
            self.checkpoints.recover()
            for tmp in self.path.glob(".*.tmp"):  # atomic_write_text's temporary files
                tmp.unlink(missing_ok=True)
            yield self

    def check_writable(self) -> None:
        """A StorageError unless a file can be created in the run directory (before any work is done)."""
        try:
            fd, name = tempfile.mkstemp(dir=self.path, prefix=".probe.", suffix=".tmp")
        except OSError as exc:
            raise storage_error(exc, "write to", self.path) from None
        os.close(fd)
        os.unlink(name)

    def write_config(self, config: TrainConfig) -> None:
        data = {k: v for k, v in config.model_dump().items() if v is not None}
        atomic_write_text(self.config_path, tomli_w.dumps(data))

    def read_results(self) -> dict:
        if not self.results_path.exists():
            return {}
        try:
            results = json.loads(self.results_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"corrupt results file {self.results_path}: {exc}") from None
        if not isinstance(results, dict):
            raise InvalidInputError(
                f"corrupt results file {self.results_path}: it holds a JSON {type(results).__name__}, not an object "
                "(move it aside to start a new one)"
            )
        return results

    def drop_evaluation(self) -> list[str]:
        """Remove what was computed from the final weights (eval.* and reference.* results, figures, report),
        before those weights change; returns what was removed."""
        results = self.read_results()
        stale = [k for k in results if k.startswith(EVALUATION_PREFIXES)]
        if stale:
            kept = {k: v for k, v in results.items() if k not in stale}
            atomic_write_text(self.results_path, json.dumps(kept, indent=1, sort_keys=True))
        removed = [f"{len(stale)} evaluation results"] if stale else []
        for path in (self.figures_dir, self.report_path, self.path / "eval" / "trained"):
            if path.is_dir():
                shutil.rmtree(path)
                removed.append(path.name)
            elif path.exists():
                path.unlink()
                removed.append(path.name)
        return removed

    def update_results(self, values: dict) -> dict:
        """Merge `values` into results.json (atomically) and return the merged dict."""
        results = {**self.read_results(), **values}
        atomic_write_text(self.results_path, json.dumps(results, indent=1, sort_keys=True))
        return results

    def checkpoint_path(self, which: str = "final") -> Path:
        if which == "final":
            path = self.checkpoints.final
        elif which == "latest":
            path = self.checkpoints.latest()
        else:
            raise InvalidInputError(f"unknown checkpoint {which!r}; choose final or latest")
        if path is None or not path.exists():
            raise CheckpointError(f"{self.path} has no {which} checkpoint (has training finished?)")
        return path

    def build_model(self, config: TrainConfig | None = None) -> GaussianVAE:
        """The run's network as initialised before training (same seed, same weights)."""
        config = config or self.config()
        shape = dataset_info(config.dataset).observation_shape
        return GaussianVAE(shape, config.latent_dim, config.architecture, make_generator(config.seed, "init"))

    def load_model(self, which: str = "final", device: str | torch.device = "cpu") -> GaussianVAE:
        """The trained network in eval mode; which = "final", "latest" or "untrained"."""
        model = self.build_model()
        if which != "untrained":
            load_weights(model, self.checkpoint_path(which))
        return model.to(device).eval()

    def load_dataset(self, device: str | torch.device = "cpu") -> FactorDataset:
        config = self.config()
        return get_dataset(config.dataset, config.data_dir, config.dataset_source, **config.dataset_options).to(device)
