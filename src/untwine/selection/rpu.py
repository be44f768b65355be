"""rPU-VAE (Estermann et al. 2020 §4; spec model-selection-methods.md §1.5): recursive PBT-UDR-VAE.

    run_rpu("R", RPUSettings(dataset="dsprites", population=8, generations=10, interval_samples=20_000))

1. **x-run** (`R/x/`): PBT with the UDR fitness on the full data set D_0 until the rPU stop rule
   (`pbt_schedule.converged`: the per-round best changed by < 0.005 six times in a row; `failed`: best < 0.1, which
   ends the whole rPU run; or the `generations` cap, which untwine adds and treats as converged). The x-model is the
   best member's best model over all rounds.
2. **Leaf runs** (`R/leaf-<b>/`, one per branch b = 0..leaf_runs-1, the reference's `x_peak`): label D_cur with
   the current model (`rpu_reduction.label_dataset`: active latents, mean "KL" > 1), reduce it
   (`rpu_reduction.reduce_dataset`, branch b at the first reduction, then the best-ranked cell), train a fresh
   PBT-UDR population on D_next (`R/leaf-<b>/level-<L>/`, a `SubsetDataset` whose len is |D_next|, with the
   adaptive interval max(10,000, |D_next|) unless `leaf_interval_samples` is set), and repeat with the new model
   until `levels` levels are labelled or a reduction stops (no active latent, no peak, no intersection, fewer than
   10 images).
3. **Surrogate labels** (`surrogate_labels.leaf_run_labels`): each leaf run's chain of levels (all share level 0,
   the x-model's labels of D_0).
4. **Final model** (`R/final/`): PBT-S-VAE on D_0 with the surrogate-label MIG fitness (median over the leaf runs),
   the initial population halved after the first round; its exported model is `R/final/final`.

Every level's subset is described with the true factors (`R/rpu.json` "levels": size, which factors it holds
fixed): the paper's Fig. 3. Each PBT run resumes on its own (`pbt.run_pbt`), so a killed `run_rpu` started again
continues where it stopped; labels and reductions are recomputed (they are deterministic).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from untwine.errors import InvalidInputError
from untwine.selection.pbt import PBTSettings, _atomic_json, build_dataset, run_pbt

RPU_FILE = "rpu.json"


@dataclass
class RPUSettings:
    dataset: str = "dsprites"
    data_dir: str | None = None
    dataset_source: str = "auto"
    architecture: str = "rpu_conv"
    latent_dim: int = 10
    seed: int = 0
    population: int = 56
    generations: int = 30  # cap on the rounds of each x-run / leaf level (the reference has none)
    interval_samples: int = 480_000  # x-run
    leaf_interval_samples: int | None = None  # None: max(10,000, |D_cur|)
    models_per_member: int = 5
    udr_points: int = 1000
    leaf_runs: int = 3
    levels: int = 3  # surrogate-label levels per leaf run (prepare_leaf_run's nr_its_to_use)
    kl_estimate: str = "code"
    kl_estimator: str = "sample"
    boundaries: str = "code"
    failure_threshold: float = 0.1
    final_population: int = 56
    final_generations: int = 17
    final_interval_samples: int = 480_000
    final_points: int = 50_000
    device: str = "cpu"

    def __post_init__(self):
        if self.leaf_runs < 1 or self.levels < 1:
            raise InvalidInputError("rPU-VAE needs leaf_runs >= 1 and levels >= 1")

    def pbt(self, **changes) -> PBTSettings:
        base = PBTSettings(
            fitness=f"udr:{self.udr_points}",
            population=self.population,
            generations=self.generations,
            stop="converge",
            interval_samples=self.interval_samples,
            dataset=self.dataset,
            data_dir=self.data_dir,
            dataset_source=self.dataset_source,
            architecture=self.architecture,
            latent_dim=self.latent_dim,
            models_per_member=self.models_per_member,
            kl_estimate=self.kl_estimate,
            kl_estimator=self.kl_estimator,
            seed=self.seed,
            failure_threshold=self.failure_threshold,
            device=self.device,
        )
        return replace(base, **changes)


class DatasetImages:
    """The images of a data set at flat grid indices, in order: `view[i:j]` / `len(view)` (what `label_dataset`
    reads), and `view(positions)` (what `surrogate_mig` reads). Built lazily where it is used (a Ray worker)."""

    def __init__(self, settings: PBTSettings, indices=None, dataset=None):
        self.settings, self.dataset = settings, dataset
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        self._built = None

    def _base(self):
        if self._built is None:
            self._built = build_dataset(replace(self.settings, subset=None), self.dataset)
        return self._built

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self._base())

    def _images(self, grid: np.ndarray) -> torch.Tensor:
        base = self._base()
        factors = base.index_to_factors(torch.as_tensor(grid, dtype=torch.long))
        return base.observations(factors, torch.Generator(device=base.device).manual_seed(0))

    def __getitem__(self, item: slice) -> torch.Tensor:
        positions = np.arange(len(self))[item]
        return self(positions)

    def __call__(self, positions) -> torch.Tensor:
        positions = np.asarray(positions, dtype=np.int64)
        return self._images(positions if self.indices is None else self.indices[positions])

    def __getstate__(self):
        return {**self.__dict__, "_built": None}


def _factor_summary(base, grid: np.ndarray) -> dict:
    """Which true factors a subset holds fixed (a single value) and how many values the others take."""
    factors = base.index_to_factors(torch.as_tensor(grid, dtype=torch.long)).numpy()
    names = list(base.factor_names) or [f"factor_{k}" for k in range(factors.shape[1])]
    values = {name: int(np.unique(factors[:, k]).size) for k, name in enumerate(names)}
    return {"size": int(len(grid)), "fixed": [n for n, v in values.items() if v == 1], "values": values}


LABELLING_FILE = "labelling.npz"


def _label(run_out: Path, images: DatasetImages, kl_estimate: str):
    """The exported model of the PBT run `run_out` labels `images` (§1.5 B.1). Kept in run_out/labelling.npz (the
    exported model never changes once written), so a resumed rPU run does not encode the data set again; the time
    it took is in the file (`wall_s`, `cpu_s`)."""
    from untwine.runs import RunDir
    from untwine.selection.rpu_reduction import Labelling, label_dataset

    path = run_out / LABELLING_FILE
    if path.exists():
        with np.load(path) as stored:
            if int(stored["size"]) == len(images) and str(stored["estimate"]) == kl_estimate:
                labelling = Labelling(stored["means"], stored["kl"], stored["active"], kl_estimate)
                return labelling, {"label_wall_s": float(stored["wall_s"]), "label_cpu_s": float(stored["cpu_s"])}
    start, cpu = time.perf_counter(), time.process_time()
    model = RunDir(run_out / "final").load_model("final")
    labelling = label_dataset(model, images, estimate=kl_estimate)
    times = {"label_wall_s": time.perf_counter() - start, "label_cpu_s": time.process_time() - cpu}
    tmp = path.with_name("labelling.tmp.npz")
    np.savez(
        tmp,
        means=labelling.means,
        kl=labelling.kl,
        active=labelling.active,
        size=len(images),
        estimate=kl_estimate,
        wall_s=times["label_wall_s"],
        cpu_s=times["label_cpu_s"],
    )
    os.replace(tmp, path)
    return labelling, times


def run_rpu(out: str | Path, settings: RPUSettings, dataset=None, address=None, num_cpus=None, temp_dir=None) -> dict:
    """Run (or resume) rPU-VAE into `out`; returns the summary also written to R/rpu.json."""
    from untwine.study.runner import DEFAULT_TEMP_DIR, ray_session

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stored = out / "settings.json"
    if stored.exists() and json.loads(stored.read_text()) != asdict(settings):
        raise InvalidInputError(f"{out} holds an rPU-VAE run with different settings; use another --out")
    _atomic_json(stored, asdict(settings))
    start = time.perf_counter()
    pbt = settings.pbt()
    base = build_dataset(pbt, dataset)
    summary: dict = {"stop": None, "leaf_runs": [], "levels": []}
    kw = {"dataset": dataset, "address": address, "num_cpus": num_cpus, "temp_dir": temp_dir}
    temp = Path(temp_dir) if temp_dir else DEFAULT_TEMP_DIR
    with ray_session(address, num_cpus, temp, out / "logs" / "ray.log"):
        x = run_pbt(out / "x", pbt, **kw)
        summary["x_run"] = {"stop": x.stop, "generations": x.generations, "best": x.best}
        if x.stop == "failed" or not x.best:
            summary["stop"] = f"x-run failed (best UDR < {settings.failure_threshold})"
            return _finish(out, summary, start)
        full = np.arange(len(base))
        level0, times = _label(out / "x", DatasetImages(pbt, None, dataset), settings.kl_estimate)
        summary["levels"].append(
            {"leaf": None, "level": 0, **_factor_summary(base, full), "active": _active(level0), **times}
        )
        chains = []
        for branch in range(settings.leaf_runs):

            def train_and_label(grid, iteration, branch=branch):
                level_dir = out / f"leaf-{branch}" / f"level-{iteration + 1}"
                level_dir.mkdir(parents=True, exist_ok=True)
                np.save(level_dir / "indices.npy", grid)
                level_pbt = settings.pbt(
                    subset=str((level_dir / "indices.npy").resolve()),
                    interval_samples=settings.leaf_interval_samples,
                    seed=settings.seed + 1000 * (branch + 1) + iteration,
                )
                result = run_pbt(level_dir / "pbt", level_pbt, **kw)
                if result.stop == "failed" or not result.best:
                    return None, result.stop, {}
                labelling, times = _label(level_dir / "pbt", DatasetImages(pbt, grid, dataset), settings.kl_estimate)
                return labelling, result.stop, times

            chain, leaf, levels = leaf_run(base, level0, branch, settings, train_and_label)
            summary["levels"] += levels
            summary["leaf_runs"].append(leaf)
            if chain is not None:
                chains.append(chain)
        if not chains:
            summary["stop"] = "no surrogate labels (the x-model has no active latent)"
            return _finish(out, summary, start)
        final = settings.pbt(
            fitness=f"surrogate_mig:{settings.final_points}",
            population=settings.final_population,
            generations=settings.final_generations,
            stop="fixed",
            interval_samples=settings.final_interval_samples,
            init_population_factor=2 if settings.final_population >= 4 else 1,
            models_per_member=1,
        )
        extra = {"leaf_runs": chains, "observations": DatasetImages(pbt, None, dataset)}
        result = run_pbt(out / "final", final, extra=extra, **kw)
        summary["final"] = {"stop": result.stop, "generations": result.generations, "best": result.best}
        summary["stop"] = "done"
    return _finish(out, summary, start)


def leaf_run(base, level0, branch: int, settings: RPUSettings, train_and_label):
    """One leaf run (§1.5 Phase B) from the x-model's labelling of D_0: reduce (branch `branch` first), then
    `train_and_label(grid, iteration)` -> (labelling of D_next by a model trained on it, or None; its PBT stop;
    optionally a dict of timings kept in the level's summary),
    until `settings.levels` levels are labelled or a stop. Returns (its LeafRunLabels or None, the leaf run's
    summary, one summary per new level: size and the true factors it holds fixed)."""
    from untwine.selection.rpu_reduction import reduce_dataset
    from untwine.selection.surrogate_labels import leaf_run_labels

    labels, positions, grid, labelling = [], [], np.arange(len(base)), level0
    leaf, levels = {"branch": branch, "stop": None, "levels": 0}, []
    while True:
        if labelling.labels is None:
            leaf["stop"] = "no active latent"
            break
        labels.append(labelling.labels)
        if len(labels) >= settings.levels:
            leaf["stop"] = "levels"
            break
        iteration = len(labels) - 1
        reduction = reduce_dataset(labelling.labels, iteration, branch, settings.boundaries)
        if reduction.stop:
            leaf["stop"] = reduction.stop
            break
        positions.append(reduction.indices)
        grid = grid[reduction.indices]
        level = {"leaf": branch, "level": iteration + 1, **_factor_summary(base, grid)}
        labelling, stop, *times = train_and_label(grid, iteration)
        active = {"active": _active(labelling)} if labelling else {}
        levels.append({**level, "stop": stop, **active, **(times[0] if times else {})})
        if labelling is None:
            leaf["stop"] = "leaf level failed (best UDR below the threshold)"
            break
    leaf["levels"] = len(labels)
    chain = leaf_run_labels(labels, positions[: len(labels) - 1], levels=len(labels)) if labels else None
    return chain, leaf, levels


def _active(labelling) -> dict:
    return {"latents": [int(a) for a in labelling.active], "kl": [round(float(v), 4) for v in labelling.kl]}


def _finish(out: Path, summary: dict, start: float) -> dict:
    summary["wall_s"] = time.perf_counter() - start
    _atomic_json(out / RPU_FILE, summary)
    return summary


def final_run(out: str | Path) -> Path | None:
    """The run directory of rPU-VAE's final model (R/final/final), if it has one."""
    path = Path(out) / "final" / "final"
    return path if (path / "config.toml").exists() else None
