"""Run a set of metrics on a model or a run; results are flat, namespaced rows (DESIGN.md).

Keys: `eval.<representation>.<metric>.<key>`, e.g. `eval.mean.mig.discrete_mig`, and the same values under the
reference's names (spec §7.2): `reference.<representation>.<metric config>.evaluation_results.<key>`, e.g.
`reference.mean.factor_vae_metric.evaluation_results.eval_accuracy`, so rows can be matched with
disentanglement_lib's aggregated results (keys whose meaning differs from the reference's are left out there).
When the protocols would encode more observations than a stored data set holds, every stored image is encoded once
per model into a code cache (code_cache.py) that all protocols and both representations gather from.
As in disentanglement_lib's `dlib_reproduce` (spec §0), every model is evaluated with the same evaluation seeds,
so the metrics' sampling noise is shared across models (and between a model and its untrained self).
Matrices behind the scores (`Scores.arrays`, e.g. MIG's mutual-information matrix) come back in the results'
`.arrays`, keyed `eval.<representation>.<metric>.<name>`; `evaluate_run` stores them under <run>/eval/ (arrays.py).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from untwine.config import parse_value
from untwine.errors import InvalidInputError, MetricsFailedError, StorageError, UntwineError
from untwine.evaluation.code_cache import CodeCache, planned_encodings, worthwhile
from untwine.evaluation.representation import REPRESENTATIONS, representation
from untwine.metrics import NOT_REFERENCE_KEYS, PROTOCOLS, REFERENCE_NAMES
from untwine.metrics.utils import Scores
from untwine.selection.label_noise import with_label_noise

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
    if key not in settings and key != "label_noise":  # label_noise: selection/label_noise.py (Holtz et al. Table 2)
        raise InvalidInputError(
            f"--option {text!r}: {metric} has no setting {key!r}; its settings: {', '.join(settings)}"
        )
    default = 0 if key == "label_noise" else inspect.signature(PROTOCOLS[metric]).parameters[key].default
    return metric, key, _like_default(text, parse_value(raw), default)


def _like_default(text: str, value, default):
    """`value` checked against the type of the setting's default: a clear error for "num_bins=abc"."""
    if isinstance(default, bool):
        words = {"true": True, "false": False, "1": True, "0": False}
        if str(value).strip().lower() in words:
            return words[str(value).strip().lower()]
        raise InvalidInputError(f"--option {text!r}: expected true or false")
    if isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidInputError(f"--option {text!r}: expected an integer")
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInputError(f"--option {text!r}: expected a number")
        return float(value)
    return value


EVAL_STREAMS = {"data": 0, "noise": 1}


def _generator(eval_seed: int, stream: str, representation_name: str, metric: str, device) -> torch.Generator:
    """The evaluation's generator for one (stream, representation, metric): "data" draws the factors and the
    metric's own randomness, "noise" the sampled representation's eps. Each is its own SeedSequence entropy
    (as `untwine.seeding` does for training), so no two streams of any seeds share draws."""
    words = np.random.SeedSequence(
        [eval_seed, EVAL_STREAMS[stream], REPRESENTATIONS.index(representation_name), *metric.encode()]
    )
    return torch.Generator(device=device).manual_seed(int(words.generate_state(1, dtype=np.uint64)[0] >> 1))


def code_cache_for(
    model,
    dataset,
    metrics: Iterable[str] | str,
    representations: Sequence[str] = REPRESENTATIONS,
    options: dict[str, dict] | None = None,
    code_cache: CodeCache | bool | None = None,
) -> CodeCache | None:
    """The code cache `evaluate_model` uses (see its `code_cache`): built when the requested protocols would encode
    more observations than `dataset` stores (counted by `planned_encodings`), or when `code_cache` is True."""
    if isinstance(code_cache, CodeCache) or code_cache is False:
        return code_cache or None
    options = options or {}
    names = metric_names(metrics)
    planned = len(representations) * sum(planned_encodings(n, dataset, options.get(n)) for n in names)
    if code_cache is True or worthwhile(planned, model, dataset):
        return CodeCache.build(model, dataset)
    return None


def evaluate_model(
    model,
    dataset,
    metrics: Iterable[str] | str = DEFAULT_METRICS,
    representations: Sequence[str] = REPRESENTATIONS,
    eval_seed: int = 0,
    options: dict[str, dict] | None = None,
    code_cache: CodeCache | bool | None = None,
) -> dict[str, float]:
    """Evaluate `model` on `dataset`: {"eval.<rep>.<metric>.<key>": value, ...}.

    options: per-metric keyword overrides of the reference defaults, e.g. {"mig": {"num_train": 2000}};
    {"mig": {"label_noise": 2}} scores with Holtz et al.'s noise regime 2 under `eval.<rep>.mig_label_noise2.*`.
    code_cache: None (default) encodes every stored image once (a CodeCache) when the requested protocols would
    encode more observations than the data set stores; True always does (for a stored data set), False never;
    a CodeCache built for this model and data set is used as it is. Its build time is `eval.code_cache.elapsed_s`.
    The returned dict's `.arrays` hold the metrics' matrices: {"eval.<rep>.<metric>.<name>": ndarray}.
    """
    names = metric_names(metrics)
    for rep in representations:
        if rep not in REPRESENTATIONS:
            raise InvalidInputError(f"unknown representation {rep!r}; choose mean or sampled")
    options = options or {}
    results = Scores()
    cache = code_cache_for(model, dataset, names, representations, options, code_cache)
    if cache is not None and cache is not code_cache:
        results["eval.code_cache.elapsed_s"] = cache.elapsed_s
    for rep in representations:
        for name in names:
            data_gen = _generator(eval_seed, "data", rep, name, dataset.device)
            noise_gen = _generator(eval_seed, "noise", rep, name, next(model.parameters()).device)
            settings = dict(options.get(name, {}))
            data, label = with_label_noise(dataset, name, settings.pop("label_noise", 0), eval_seed, rep)
            start = time.perf_counter()
            represent = representation(model, rep, noise_gen, cache)
            values = PROTOCOLS[name](represent, data, data_gen, **settings)
            elapsed = time.perf_counter() - start
            for array_name, array in getattr(values, "arrays", {}).items():
                results.arrays[f"eval.{rep}.{label}.{array_name}"] = array
            reference = (
                f"reference.{rep}.{REFERENCE_NAMES[name]}.evaluation_results"
                if name in REFERENCE_NAMES and label == name
                else None
            )
            for key, value in values.items():
                results[f"eval.{rep}.{label}.{key}"] = value
                if reference and key not in NOT_REFERENCE_KEYS.get(name, ()):
                    results[f"{reference}.{key}"] = value
            results[f"eval.{rep}.{label}.elapsed_s"] = elapsed
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
    code_cache: CodeCache | bool | None = None,
) -> dict[str, float]:
    """Evaluate a run's final model (or, with `untrained`, the same network before training) and merge the
    results into its results.json (untrained ones prefixed `untrained.`).

    Holds the run directory's lock, and checks that results.json can be written before any work. Each metric's
    results are saved as soon as it finishes; a metric that fails (or returns a non-finite value) does not stop
    the others, and the failures are raised together at the end (MetricsFailedError: one line per failure, with
    the results that were computed). If results.json cannot be written after all (a full disk), the results are
    saved to a file in the temporary directory, which the error names. The code cache (see `evaluate_model`) is
    built once for all the metrics. The metrics' matrices go to
    <run>/eval/<trained|untrained>/<representation>/<metric>.npz (`untwine.evaluation.arrays`).
    """
    from untwine.evaluation.arrays import write_arrays
    from untwine.runs import RunDir
    from untwine.training.trainer import resolve_device

    run = RunDir(run_dir).require()
    names = metric_names(metrics)
    for rep in representations:
        if rep not in REPRESENTATIONS:
            raise InvalidInputError(f"unknown representation {rep!r}; choose mean or sampled")
    device = resolve_device(device)
    prefix = "untrained." if untrained else ""
    results: dict[str, float] = {}
    failures: list[str] = []
    arrays: dict = {}
    with run.lock("evaluating"):
        run.read_results()  # a corrupt results.json is an error before the work, not after it
        model = run.load_model("untrained" if untrained else "final", device=device)
        dataset = run.load_dataset(device=device)
        cache = code_cache_for(model, dataset, names, representations, options, code_cache)
        if cache is not None and cache is not code_cache:
            values = {f"{prefix}eval.code_cache.elapsed_s": cache.elapsed_s}
            _save_results(run, values, results)
            results.update(values)
        for name in names:
            try:
                values = evaluate_model(
                    model, dataset, [name], representations, eval_seed, options, code_cache=cache or False
                )
            except Exception as exc:  # noqa: BLE001  one metric's failure must not lose the others
                kind = "" if isinstance(exc, UntwineError) else f"{type(exc).__name__}: "
                failures.append(f"{prefix}{name}: {kind}{str(exc).splitlines()[0] if str(exc) else ''}")
                continue
            bad = [k for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                failures.append(f"{prefix}{name}: {bad[0]} is {values[bad[0]]} (not saved)")
                continue
            arrays.update(values.arrays)
            values = {f"{prefix}{k}": v for k, v in values.items()}
            _save_results(run, values, results)
            results.update(values)
        if arrays:
            write_arrays(run, arrays, dataset.factor_names, "untrained" if untrained else "trained")
    if failures:
        raise MetricsFailedError(failures, results)
    return results


def _save_results(run, values: dict, earlier: dict) -> None:
    """Merge `values` into the run's results.json; if that fails, keep everything computed in a temporary file."""
    try:
        run.update_results(values)
    except OSError as exc:
        fd, path = tempfile.mkstemp(prefix=f"untwine-results-{run.name}-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({**earlier, **values}, f, indent=1, sort_keys=True)
        raise StorageError(f"{exc}; the results computed so far were saved to {path}") from None
