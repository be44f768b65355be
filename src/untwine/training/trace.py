"""Training traces for the training-dynamics score (Holtz et al. 2022 §3.1; spec model-selection-methods.md §3.4).

A run trained with `trace_every = N > 0` records, at step 0 and at every step that is a multiple of N, the
decoder's hidden activations on a fixed set of `trace_samples` observations:
- the observations are drawn once from the evaluation seed `TRACE_SEED` (not from the run's seed or any training
  stream), so every run of a data set traces the SAME observations -- the realisations of a specification can be
  embedded jointly -- and tracing leaves the training's random streams untouched (bit-identical weights);
- each observation is encoded to its mean, which is decoded in eval mode without gradients; every nonlinearity
  inside the decoder (ReLU / tanh modules: the hidden units; the output logits are not hidden) is recorded,
  convolutional feature maps averaged over their spatial positions (one number per channel -- [PROPOSAL] of spec
  §3.4 step 1: the paper does not say how conv units are counted). The conv decoder gives 256 + 1024 + 64 + 32 + 32
  = 1,408 features per observation, the fc decoder 3 x 1,200.

Layout under the run directory (float16 activations, about 280 KB per trace step for the conv decoder and 100
observations; values beyond float16's range are clipped to +-65504):
    trace/samples.safetensors         factors [M, K] of the traced observations; metadata: seed, layer widths
    trace/step-00001000.safetensors   activations [M, F] at step 1000
Each file is written atomically (temporary name, fsync, rename). On resume from a checkpoint at step c, entries
after c are deleted before training continues, so a killed-and-resumed run's trace equals the uninterrupted one's.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from untwine.errors import InvalidInputError

TRACE_DIR = "trace"
SAMPLES_FILE = "samples.safetensors"
TRACE_SEED = 0  # the evaluation seed the traced observations are drawn from (shared by every run)
FLOAT16_MAX = 65504.0


def trace_generator(seed: int = TRACE_SEED) -> torch.Generator:
    """The (CPU) generator the traced observations are drawn from: a function of the evaluation seed alone, so runs
    on any device trace the same observations."""
    words = np.random.SeedSequence([seed, *b"trace"]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(words[0] >> 1))


def _step_file(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.safetensors"


def _step_of(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def hidden_units(decoder: nn.Module) -> list[nn.Module]:
    """The decoder's nonlinearity modules, in order: their outputs are its hidden units."""
    return [m for m in decoder.modules() if isinstance(m, (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU))]


@torch.no_grad()
def decoder_activations(model, observations: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """(features [M, F] float32, widths per layer): the hidden activations of the decoder fed the encoder means of
    `observations`, in eval mode; conv maps averaged over space. The model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    outputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in hidden_units(model.decoder)]
    try:
        x = observations
        if x.ndim == 4 and getattr(model, "architecture", None) == "conv":
            x = x.contiguous(memory_format=torch.channels_last)
        mean, _ = model.encode(x)
        model.decode(mean)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    pooled = [out.float().mean(dim=(2, 3)) if out.ndim == 4 else out.float().flatten(1) for out in outputs]
    return torch.cat(pooled, dim=1), [p.shape[1] for p in pooled]


class TraceRecorder:
    """Records a run's trace (module docstring). The Trainer calls `start` once the run directory is ready (and a
    checkpoint possibly restored) and `after_step` after every optimiser step."""

    def __init__(self, run_path: str | Path, dataset, every: int, samples: int, seed: int = TRACE_SEED):
        if every < 1 or samples < 2:
            raise InvalidInputError(f"tracing needs trace_every >= 1 and trace_samples >= 2, got {every}, {samples}")
        self.directory = Path(run_path) / TRACE_DIR
        self.every = every
        self.seed = seed
        self.factors, self.observations = dataset.sample(samples, trace_generator(seed))  # CPU: device-independent

    def start(self, model, step: int) -> None:
        """Drop entries after `step` (left by a killed run) and leftover temporary files; record `step` if due."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.directory.glob(".*.tmp"):
            path.unlink(missing_ok=True)
        for path in self.directory.glob("step-*.safetensors"):
            if _step_of(path) > step:
                path.unlink()
        if step % self.every == 0:
            self.record(model, step)

    def after_step(self, model, step: int) -> None:
        if step % self.every == 0:
            self.record(model, step)

    def record(self, model, step: int) -> None:
        features, widths = decoder_activations(model, self.observations)
        self.directory.mkdir(parents=True, exist_ok=True)
        samples = self.directory / SAMPLES_FILE
        if not samples.exists():
            meta = {"seed": str(self.seed), "every": str(self.every), "widths": json.dumps(widths)}
            _atomic_save({"factors": self.factors.cpu().contiguous()}, samples, meta)
        values = features.clamp(-FLOAT16_MAX, FLOAT16_MAX).to(torch.float16).cpu().contiguous()
        _atomic_save({"activations": values}, _step_file(self.directory, step), {"step": str(step)})


def has_trace(run_path: str | Path) -> bool:
    directory = Path(run_path) / TRACE_DIR
    return directory.is_dir() and any(directory.glob("step-*.safetensors"))


def read_trace(run_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps [T], activations [T, M, F] float32) of a run's trace, in step order; a clear error if it has none."""
    directory = Path(run_path) / TRACE_DIR
    files = sorted(directory.glob("step-*.safetensors"), key=_step_of) if directory.is_dir() else []
    if not files:
        raise InvalidInputError(f"{run_path} has no training trace (train it with --trace-every N)")
    steps, values = [], []
    for path in files:
        try:
            values.append(load_file(path)["activations"].float().numpy())
        except (SafetensorError, OSError, KeyError) as exc:
            raise InvalidInputError(f"corrupt trace file {path}: {exc}") from None
        steps.append(_step_of(path))
    shapes = {v.shape for v in values}
    if len(shapes) > 1:
        raise InvalidInputError(f"the trace of {run_path} mixes shapes {sorted(shapes)}")
    return np.array(steps), np.stack(values)
