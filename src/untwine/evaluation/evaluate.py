"""Run a set of metrics on a model or a run; results are flat, namespaced rows (DESIGN.md).

Keys: `eval.<representation>.<metric>.<key>`, e.g. `eval.mean.mig.discrete_mig`, and the same values under the
reference's names (spec §7.2): `reference.<representation>.<metric config>.evaluation_results.<key>`, e.g.
`reference.mean.factor_vae_metric.evaluation_results.eval_accuracy`, so rows can be matched with
disentanglement_lib's aggregated results (keys whose meaning differs from the reference's are left out there).
As in disentanglement_lib's `dlib_reproduce` (spec §0), every model is evaluated with the same evaluation seeds,
so the metrics' sampling noise is shared across models (and between a model and its untrained self).
Matrices behind the scores (`Scores.arrays`, e.g. MIG's mutual-information matrix) come back in the results'
`.arrays`, keyed `eval.<representation>.<metric>.<name>`; `evaluate_run` stores them under <run>/eval/ (arrays.py).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from untwine.config import parse_value
from untwine.errors import InvalidInputError
from untwine.evaluation.representation import REPRESENTATIONS, representation
from untwine.metrics import NOT_REFERENCE_KEYS, PROTOCOLS, REFERENCE_NAMES
from untwine.metrics.utils import Scores

DEFAULT_METRICS = ("mig",)


def metric_names(requested: Iterable[str] | str) -> list[str]:
    """Expand "all" and validate names."""
    if isinstance(requested, str):
        requested = [r.strip() for r in requested.split(",") if r.strip()]
    names: list[str] = []
    for name in requested:
        if name == "all":
            names.extend(n for n in PROTOCOLS if n not in names)
        elif name in PROTOCOLS:
            if name not in names:
                names.append(name)
        else:
            raise InvalidInputError(f"unknown metric {name!r}; known: {', '.join(PROTOCOLS)}, all")
    return names


def scaled_options(name: str, num_points: int) -> dict:
    """Options that shrink a metric's sample sizes for a quick look: training-set sizes become `num_points`
    (a list of sizes keeps those <= num_points), test/eval sets `num_points // 2`. Not the reference protocol."""
    if num_points < 2:
        raise InvalidInputError(f"num_points must be at least 2, got {num_points}")
    options = {}
    for param in inspect.signature(PROTOCOLS[name]).parameters.values():
        if param.name in ("num_train", "num_variance_estimate"):
            if isinstance(param.default, (tuple, list)):
                options[param.name] = tuple(n for n in param.default if n <= num_points) or (num_points,)
            else:
                options[param.name] = num_points
        elif param.name in ("num_test", "num_eval"):
            options[param.name] = max(num_points // 2, 1)
    return options


def parse_option(text: str, metrics: Sequence[str]) -> tuple[str, str, object]:
    """ "dci.importance=lightgbm" -> ("dci", "importance", "lightgbm"); numbers become int or float. The metric
    must be among `metrics` and the setting one of its protocol's keyword arguments."""
    name, sep, raw = text.partition("=")
    metric, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise InvalidInputError(f"--option {text!r}: expected metric.setting=value, e.g. dci.importance=lightgbm")
    if metric not in metrics:
        raise InvalidInputError(
            f"--option {text!r}: metric {metric!r} is not among those evaluated ({', '.join(metrics)})"
        )
    settings = [
        p
        for p in inspect.signature(PROTOCOLS[metric]).parameters
        if p not in ("representation", "dataset", "generator")
    ]
    if key not in settings:
        raise InvalidInputError(
            f"--option {text!r}: {metric} has no setting {key!r}; its settings: {', '.join(settings)}"
        )
    return metric, key, parse_value(raw)


def _generator(eval_seed: int, representation_name: str, metric: str, device) -> torch.Generator:
    words = np.random.SeedSequence([eval_seed, REPRESENTATIONS.index(representation_name), *metric.encode()])
    return torch.Generator(device=device).manual_seed(int(words.generate_state(1, dtype=np.uint64)[0] >> 1))


def evaluate_model(
    model,
    dataset,
    metrics: Iterable[str] | str = DEFAULT_METRICS,
    representations: Sequence[str] = REPRESENTATIONS,
    eval_seed: int = 0,
    options: dict[str, dict] | None = None,
) -> dict[str, float]:
    """Evaluate `model` on `dataset`: {"eval.<rep>.<metric>.<key>": value, ...}.

    options: per-metric keyword overrides of the reference defaults, e.g. {"mig": {"num_train": 2000}}.
    The returned dict's `.arrays` hold the metrics' matrices: {"eval.<rep>.<metric>.<name>": ndarray}.
    """
    names = metric_names(metrics)
    for rep in representations:
        if rep not in REPRESENTATIONS:
            raise InvalidInputError(f"unknown representation {rep!r}; choose mean or sampled")
    options = options or {}
    results = Scores()
    for rep in representations:
        for name in names:
            data_gen = _generator(eval_seed, rep, name, dataset.device)
            noise_gen = _generator(eval_seed + 1, rep, name, next(model.parameters()).device)
            start = time.perf_counter()
            values = PROTOCOLS[name](representation(model, rep, noise_gen), dataset, data_gen, **options.get(name, {}))
            elapsed = time.perf_counter() - start
            for array_name, array in getattr(values, "arrays", {}).items():
                results.arrays[f"eval.{rep}.{name}.{array_name}"] = array
            reference = (
                f"reference.{rep}.{REFERENCE_NAMES[name]}.evaluation_results" if name in REFERENCE_NAMES else None
            )
            for key, value in values.items():
                results[f"eval.{rep}.{name}.{key}"] = value
                if reference and key not in NOT_REFERENCE_KEYS.get(name, ()):
                    results[f"{reference}.{key}"] = value
            results[f"eval.{rep}.{name}.elapsed_s"] = elapsed
            if reference:
                results[f"{reference}.elapsed_time"] = elapsed
    return results


def evaluate_run(
    run_dir,
    metrics: Iterable[str] | str = DEFAULT_METRICS,
    representations: Sequence[str] = REPRESENTATIONS,
    untrained: bool = False,
    eval_seed: int = 0,
    options: dict[str, dict] | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Evaluate a run's final model (or, with `untrained`, the same network before training) and merge the
    results into its results.json (untrained ones prefixed `untrained.`); the metrics' matrices go to
    <run>/eval/<trained|untrained>/<representation>/<metric>.npz (`untwine.evaluation.arrays`)."""
    from untwine.evaluation.arrays import write_arrays
    from untwine.runs import RunDir

    run = RunDir(run_dir).require()
    model = run.load_model("untrained" if untrained else "final", device=device)
    dataset = run.load_dataset(device=device)
    results = evaluate_model(model, dataset, metrics, representations, eval_seed, options)
    arrays = results.arrays
    if untrained:
        results = {f"untrained.{k}": v for k, v in results.items()}
    run.update_results(results)
    write_arrays(run, arrays, dataset.factor_names, "untrained" if untrained else "trained")
    return results
