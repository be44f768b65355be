"""Tiny PBT and rPU-VAE runs made in process, as the Ray driver leaves them (for the export and report tests):
real models trained and scored by the real fitness, their generations stored by the run's own driver."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from untwine.data import get_dataset
from untwine.selection.fitness import parse_fitness, score
from untwine.selection.pbt import (
    PBTSettings,
    _Driver,
    _open,
    build_bundle,
    evaluate_final,
    export_final,
    final_evaluation,
    round_dir,
)
from untwine.selection.pbt_schedule import Hyperparameters

TINY = dict(dataset="dummy_data", architecture="fc", latent_dim=3, population=4, generations=2, interval_samples=32)
CPU = {"train_cpu_s": 0.5, "score_cpu_s": 0.25, "cpu_s": 1.0}  # what each member reports per interval (made up)


def stored_pbt(out: Path, fitness: str = "mig:100", models: int | None = None, generations: int = 2, **changes):
    """A PBT run in `out` as the Ray driver leaves it, made in process: every member (fixed sane hyperparameters)
    trains 32 samples per round and is scored by the real fitness, saved to its round directory; the driver stores
    each generation and copies the best member to P/best; the exploits load their source's state. Not exported.
    Returns (settings, driver, the bundles' scores per round {member: {round: result}})."""
    settings = PBTSettings(**{**TINY, "generations": generations, **changes}, fitness=fitness, models_per_member=models)
    dataset = get_dataset("dummy_data")
    spec = parse_fitness(fitness)
    store, explorer, best = _open(out, settings)
    for member in explorer.members:
        explorer.hyperparameters[member] = Hyperparameters(2e-4 * (member + 1), 16, 1 + member)
    driver = _Driver(out, settings, explorer, store, best)
    bundles = {m: build_bundle(settings, out, m, explorer.hyperparameters[m], dataset) for m in explorer.members}
    found: dict[int, dict[int, dict]] = {}
    for round in range(generations):
        results = {}
        for member, bundle in bundles.items():
            summary = bundle.train_samples(32)
            scored = score(spec, bundle.models, dataset)
            bundle.save(round_dir(out, member, round))
            found.setdefault(member, {})[round] = scored
            h = bundle.hyperparameters
            results[member] = {
                **scored,
                "round": round,
                "lr": h.lr,
                "batch_size": h.batch_size,
                "beta": h.beta,
                "samples": bundle.samples,
                "loss": summary["loss"],
                **CPU,
            }
        result = driver.barrier(results)
        for exploit in result.exploits:
            bundles[exploit.target].load(round_dir(out, exploit.source, round))
            bundles[exploit.target].set_hyperparameters(exploit.hyperparameters)
    store.close()
    return settings, driver, found


SMALL_EVALUATION = final_evaluation(["mig", "dci"], 200, representations=("mean", "sampled"))


def exported_and_evaluated(out: Path, fitness: str = "mig:100") -> dict:
    settings, driver, _ = stored_pbt(out, fitness=fitness)
    export_final(out, settings, driver.best)
    return evaluate_final(out, SMALL_EVALUATION)


def stored_rpu(root: Path) -> dict:
    """An rPU-VAE run directory as `run_rpu` leaves it: R/x, one leaf level and R/final (tiny stored PBT runs, each
    exported), and R/rpu.json whose levels are described from the true factors of their grid points
    (`rpu._factor_summary`) of a 3 x 20 grid (factors a, b): level 0 the whole grid, level 1 the images whose a is
    2 (the level summaries only read the data set's labels)."""
    from factories import factor_pixels_dataset

    from untwine.selection.rpu import _factor_summary

    base = factor_pixels_dataset((3, 20))
    for path, fitness, models in (
        (root / "x", "udr:40", 2),
        (root / "leaf-0" / "level-1" / "pbt", "udr:40", 2),
        (root / "final", "mig:100", None),
    ):
        settings, driver, _ = stored_pbt(path, fitness=fitness, models=models)
        export_final(path, settings, driver.best)
    grid = np.arange(len(base))
    factors = base.index_to_factors(torch.as_tensor(grid)).numpy()
    subset = grid[factors[:, 0] == 2]
    summary = {
        "stop": "done",
        "levels": [
            {"leaf": None, "level": 0, **_factor_summary(base, grid), "active": {"latents": [0, 2], "kl": [2, 0, 3]}},
            {"leaf": 0, "level": 1, **_factor_summary(base, subset), "stop": "max_epoch", "active": {"latents": [1]}},
        ],
        "leaf_runs": [{"branch": 0, "stop": "levels", "levels": 2}],
        "wall_s": 12.0,
    }
    (root / "rpu.json").write_text(json.dumps(summary))
    return summary
