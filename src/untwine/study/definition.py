"""What a study is: its models (each a TrainConfig with an identity) and how every model is evaluated.

A study comes from a preset of `study.grid` with filters (`preset_study`) or from a TOML grid (`toml_study`).
A model's identity (`model_id`) is its preset model number (`grid.model_num`, spec §3) or else the hash of its
resolved config (`config_hash`), so the same model gets the same id in every rerun. Models that are equal but for
the seed form a seed group (`seed_group`), the unit of UDR and of the seed-spread analyses.

The study's fingerprint is what must match when a study directory is reused: the preset with its overrides (or the
whole TOML grid) and the evaluation settings. Filters are not part of it: running more seeds of the same study
later extends it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from untwine.config import METHOD_ALIASES, METHOD_HYPERPARAMETERS, TrainConfig
from untwine.errors import InvalidInputError
from untwine.evaluation.evaluate import metric_names, parse_option, scaled_options
from untwine.evaluation.representation import REPRESENTATIONS
from untwine.study import grid as grids

# Settings that change where or how fast a model trains, not the model: left out of its identity.
RUNTIME_FIELDS = ("device", "data_dir", "log_every", "checkpoint_every")


def _digest(data: dict, length: int = 12) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def identity(config: TrainConfig) -> dict:
    """The config values that define the model (everything but `RUNTIME_FIELDS`, and fields left unset: None).

    Leaving out the unset fields keeps every model's identity when TrainConfig gains an optional field (default
    None = the behaviour before it existed), so existing studies resume instead of retraining under new ids."""
    return {k: v for k, v in config.model_dump().items() if k not in RUNTIME_FIELDS and v is not None}


def config_hash(config: TrainConfig) -> str:
    """12 hex digits of SHA-256 over the model's identity: the id of a model that has no preset number."""
    return _digest(identity(config))


def seed_group(config: TrainConfig) -> str:
    """The id shared by models that are equal but for the seed."""
    return _digest({k: v for k, v in identity(config).items() if k != "seed"})


@dataclass(frozen=True)
class ModelSpec:
    """One model of a study."""

    model_id: str
    config: TrainConfig
    hyperparameter: str  # the swept hyperparameter(s) of the model's method
    value: float | None  # its value
    value_index: int | None  # its index in the method's sweep
    model_num: int | None = None  # the preset's model number

    @property
    def run_dir(self) -> str:
        """Where the model's run directory lives, relative to the study directory."""
        return f"runs/{self.model_id}"

    def row(self) -> dict:
        """The model's row of the store's `models` table."""
        return {
            "model_id": self.model_id,
            "model_num": self.model_num,
            "method": self.config.method,
            "dataset": self.config.dataset,
            "seed": self.config.seed,
            "hyperparameter": self.hyperparameter,
            "value": self.value,
            "value_index": self.value_index,
            "seed_group": seed_group(self.config),
            "config": json.dumps(self.config.model_dump(), sort_keys=True),
            "run_dir": self.run_dir,
        }


@dataclass
class StudyDefinition:
    """The models of a study and how each is evaluated; `fingerprint` identifies the study (not its filters)."""

    kind: str  # "preset", "config" or "imported"
    name: str
    models: list[ModelSpec]
    evaluation: dict
    spec: dict = field(default_factory=dict)  # what defines the study besides the evaluation (preset + overrides)

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name, "spec": self.spec, "evaluation": self.evaluation}

    def fingerprint(self) -> str:
        return _digest(self.describe(), 16)


def evaluation_settings(
    metrics,
    num_points: int | None,
    options: list[str] | dict | None = None,
    representations=REPRESENTATIONS,
    sampled_metrics=None,
    label_noise=None,
    label_noise_metrics=None,
) -> dict:
    """The evaluation every model of a study gets: metric names, representations, the metrics of each
    representation (`sampled_metrics`: those also run on the sampled representation; default all), and per-metric
    options (the `num_points` scaling of `evaluate.scaled_options` with explicit options on top).

    `label_noise` (regimes among 1, 2, 3; Holtz et al. Table 2) also scores `label_noise_metrics` (default: every
    metric but 'unsupervised') on the mean representation with noisy labels, beside the clean scores, under
    `eval.mean.<metric>_label_noise<r>.*` (the key "label_noise" is added only then, so other studies keep their
    fingerprint)."""
    names = metric_names(metrics)
    if not names:
        raise InvalidInputError("a study needs at least one metric")
    reps = [r.strip() for r in (representations.split(",") if isinstance(representations, str) else representations)]
    for rep in reps:
        if rep not in REPRESENTATIONS:
            raise InvalidInputError(f"unknown representation {rep!r}; choose mean or sampled")
    per_rep = {rep: list(names) for rep in reps}
    if sampled_metrics is not None and "sampled" in per_rep:
        sampled = metric_names(sampled_metrics)
        extra = [m for m in sampled if m not in names]
        if extra:
            raise InvalidInputError(
                f"sampled metric {extra[0]!r} is not among the study's metrics ({', '.join(names)})"
            )
        per_rep["sampled"] = [m for m in names if m in sampled]
    resolved: dict[str, dict] = {name: scaled_options(name, num_points) for name in names} if num_points else {}
    if isinstance(options, dict):
        for metric, settings in options.items():
            for key, value in dict(settings).items():
                metric_, key_, value_ = parse_option(f"{metric}.{key}={value}", names)
                resolved.setdefault(metric_, {})[key_] = value if not isinstance(value, str) else value_
    else:
        for text in options or []:
            metric, key, value = parse_option(text, names)
            resolved.setdefault(metric, {})[key] = value
    resolved = {k: {s: list(v) if isinstance(v, tuple) else v for s, v in opts.items()} for k, opts in resolved.items()}
    settings = {
        "metrics": names,
        "representations": reps,
        "per_representation": per_rep,
        "num_points": num_points,
        "options": resolved,
    }
    if label_noise:
        settings["label_noise"] = _label_noise_settings(label_noise, label_noise_metrics, names)
    return settings


def _label_noise_settings(regimes, metrics, names: list[str]) -> dict:
    """{"regimes": [...], "metrics": [...]} of a study's label-noise evaluation (see `evaluation_settings`)."""
    from untwine.selection.label_noise import REGIMES

    regimes = [regimes] if isinstance(regimes, (int, str)) else list(regimes)
    try:
        regimes = sorted({int(r) for r in regimes})
    except (TypeError, ValueError):
        raise InvalidInputError(f"label_noise: regimes are 1, 2 or 3 (Holtz et al. Table 2), got {regimes!r}") from None
    bad = [r for r in regimes if r not in REGIMES]
    if bad:
        raise InvalidInputError(f"label_noise: regimes are 1, 2 or 3 (Holtz et al. Table 2), got {bad[0]}")
    chosen = metric_names(metrics) if metrics is not None else [m for m in names if m != "unsupervised"]
    foreign = [m for m in chosen if m not in names or m == "unsupervised"]
    if foreign:
        raise InvalidInputError(
            f"label_noise_metrics: {foreign[0]!r} is not a label-using metric of the study ({', '.join(names)})"
        )
    if not chosen:
        raise InvalidInputError("label_noise needs a metric that uses factor labels (all but 'unsupervised')")
    return {"regimes": regimes, "metrics": chosen}


def _with_preset_options(grid, metrics, options: list[str] | dict | None) -> list[str]:
    """The preset's per-metric options (for the metrics evaluated) with the asked ones on top, as option texts."""
    names = metric_names(metrics if metrics is not None else grid.metrics)
    texts = [f"{m}.{k}={v}" for m, settings in grid.options.items() if m in names for k, v in settings.items()]
    if isinstance(options, dict):
        options = [f"{m}.{k}={v}" for m, settings in options.items() for k, v in settings.items()]
    return texts + list(options or [])


def _preset_sampled(grid, metrics) -> list[str] | None:
    """The preset's metrics of the sampled representation, among the metrics evaluated."""
    if grid.sampled_metrics is None:
        return None
    names = metric_names(metrics if metrics is not None else grid.metrics)
    return [m for m in grid.sampled_metrics if m in names]


def _apply_settings(values: dict, settings: dict) -> dict:
    """`settings` on top of one model's values; a method hyperparameter only where the model's method has it."""
    hyper = {h for hs in METHOD_HYPERPARAMETERS.values() for h in hs}
    own = METHOD_HYPERPARAMETERS[values["method"]]
    return {**values, **{k: v for k, v in settings.items() if k not in hyper or k in own}}


def _check_settings(settings: dict, methods: list[str]) -> None:
    fields = set(TrainConfig.model_fields)
    for key in settings:
        if key not in fields:
            raise InvalidInputError(f"--set {key}: not a TrainConfig field; fields: {', '.join(sorted(fields))}")
        if key in ("method", "seed", "dataset"):
            raise InvalidInputError(f"--set {key}: choose {key}s with the filters (--methods, --seeds, --datasets)")
    hyper = {h for hs in METHOD_HYPERPARAMETERS.values() for h in hs}
    for key in settings:
        if key in hyper and not any(key in METHOD_HYPERPARAMETERS[m] for m in methods):
            raise InvalidInputError(f"--set {key}: none of the study's methods ({', '.join(methods)}) has it")


def _choose(values: list | None, allowed: list, what: str, study: str) -> list:
    if values is None:
        return list(allowed)
    missing = [v for v in values if v not in allowed]
    if missing:
        shown = ", ".join(str(v) for v in allowed) if len(allowed) <= 12 else f"{allowed[0]}..{allowed[-1]}"
        raise InvalidInputError(f"{study} has no {what} {missing[0]!r}; its {what}s: {shown}")
    return list(dict.fromkeys(values))


def preset_study(
    preset: str,
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    value_indices: list[int] | None = None,
    seeds: list[int] | None = None,
    steps: int | None = None,
    settings: dict | None = None,
    metrics=None,
    num_points: int | None = None,
    options: list[str] | dict | None = None,
    representations=REPRESENTATIONS,
    sampled_metrics=None,
    label_noise=None,
    label_noise_metrics=None,
) -> StudyDefinition:
    """The models of preset `preset` that pass the filters, with its evaluation (metrics / num_points / options
    override the preset's; `steps` and `settings` override TrainConfig values of every model)."""
    grid = grids.get_preset(preset)
    datasets = [grids.grid_dataset(grid, d) for d in datasets] if datasets is not None else list(grid.datasets)
    sweeps = [grid.sweep(m) for m in methods] if methods is not None else list(grid.sweeps)
    if seeds is None and grid.default_seeds is not None:
        seeds = list(grid.default_seeds)
    seed_list = _choose(seeds, list(range(grid.num_seeds)), "seed", grid.name)
    overrides = {**({"steps": steps} if steps is not None else {}), **(settings or {})}
    _check_settings(overrides, [s.method for s in sweeps])
    models = []
    for dataset in datasets:
        for sweep in sweeps:
            indices = _choose(
                value_indices, list(range(len(sweep.values))), "value index", f"{grid.name}/{sweep.method}"
            )
            for h in indices:
                for seed in seed_list:
                    values = _apply_settings(grids.study_config(preset, sweep.method, h, seed, dataset), overrides)
                    num = grids.model_num(preset, sweep.method, h, seed, dataset)
                    config = TrainConfig.build(**values)
                    models.append(ModelSpec(str(num), config, sweep.hyperparameter, sweep.values[h], h, num))
    evaluation = evaluation_settings(
        metrics if metrics is not None else grid.metrics,
        num_points if num_points is not None else grid.num_points,
        _with_preset_options(grid, metrics, options),
        representations,
        sampled_metrics if sampled_metrics is not None else _preset_sampled(grid, metrics),
        label_noise,
        label_noise_metrics,
    )
    spec = {"preset": grid.name, "overrides": overrides}
    return StudyDefinition("preset", grid.name, models, evaluation, spec)


def toml_study(
    path: str | Path,
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    value_indices: list[int] | None = None,
    seeds: list[int] | None = None,
    metrics=None,
    num_points: int | None = None,
    options: list[str] | None = None,
    sampled_metrics=None,
    label_noise=None,
    label_noise_metrics=None,
) -> StudyDefinition:
    """The models of a TOML grid (`grid.read_grid_toml`) that pass the filters; ids are config hashes."""
    study, grid_models = grids.read_grid_toml(path)
    name = str(study.get("name", Path(path).stem))
    known = {
        "name",
        "metrics",
        "sampled_metrics",
        "num_points",
        "representations",
        "options",
        "label_noise",
        "label_noise_metrics",
    }
    unknown = sorted(set(study) - known)
    if unknown:
        raise InvalidInputError(f"{path}: [study] has unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    evaluation = evaluation_settings(
        metrics if metrics is not None else study.get("metrics", ["mig"]),
        num_points if num_points is not None else study.get("num_points"),
        options if options is not None else study.get("options"),
        study.get("representations", REPRESENTATIONS),
        sampled_metrics if sampled_metrics is not None else study.get("sampled_metrics"),
        label_noise if label_noise is not None else study.get("label_noise"),
        label_noise_metrics if label_noise_metrics is not None else study.get("label_noise_metrics"),
    )
    present = {
        "dataset": sorted({m.config.dataset for m in grid_models}),
        "method": sorted({m.config.method for m in grid_models}),
        "seed": sorted({m.config.seed for m in grid_models}),
        "value index": sorted({m.value_index for m in grid_models}),
    }
    chosen = {
        "dataset": _choose(datasets, present["dataset"], "data set", name) if datasets is not None else None,
        "method": _choose([METHOD_ALIASES.get(m, m) for m in methods], present["method"], "method", name)
        if methods is not None
        else None,
        "seed": _choose(seeds, present["seed"], "seed", name) if seeds is not None else None,
        "value index": _choose(value_indices, present["value index"], "value index", name)
        if value_indices is not None
        else None,
    }
    models = []
    for m in grid_models:
        attrs = {"dataset": m.config.dataset, "method": m.config.method, "seed": m.config.seed}
        attrs["value index"] = m.value_index
        if any(chosen[k] is not None and attrs[k] not in chosen[k] for k in chosen):
            continue
        models.append(ModelSpec(config_hash(m.config), m.config, m.hyperparameter, m.value, m.value_index))
    ids = [m.model_id for m in models]
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"{path}: the grid lists the same model twice (an axis repeats a value)")
    spec = {"grid": _digest({"models": [identity(m.config) for m in grid_models]}, 16), "models": len(grid_models)}
    return StudyDefinition("config", name, models, evaluation, spec)
