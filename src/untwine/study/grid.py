"""Study grids: the Locatello et al. 2019 `unsupervised_study_v1` as a named preset (spec §3), `cpu_study` (the same
design sized for a 2-core CPU), and grids read from TOML files (`read_grid_toml`).

The grid is data sets (7) x methods (6) x hyperparameter values (6) x seeds (50) = 12,600 models, indexed as
the reference does: model_num = 1800 D + 50 (6 m + h) + seed. `study_config` gives the exact TrainConfig
values of one model of the study, e.g. FactorVAE, value index 3 (gamma = 40), seed 7 on dSprites:

    >>> study_config("unsupervised_study_v1", "factor_vae", 3, 7)["gamma"]
    40.0

FactorVAE models of the study run with `double_count_steps=True`: the reference's global step advances twice per
iteration, so its 300,000 "steps" are ~150,000 updates (spec §2.5, §10 item 4). All other settings are the
reference defaults of TrainConfig (Adam 1e-4, batch 64, 300,000 steps, conv architecture, 10 latents).
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from untwine.config import METHOD_ALIASES, METHOD_HYPERPARAMETERS, TrainConfig
from untwine.errors import InvalidInputError

# The metric configs of the study (spec §5.15), by untwine's names; every model is scored on both representations.
REFERENCE_METRICS = (
    "beta_vae",
    "dci",
    "downstream_boosted_trees",
    "downstream_logistic_regression",
    "factor_vae",
    "mig",
    "modularity_explicitness",
    "sap",
    "unsupervised",
)


@dataclass(frozen=True)
class MethodSweep:
    method: str  # untwine's method name
    reference_name: str  # the reference's model.name
    hyperparameter: str  # the swept hyperparameter
    values: tuple[float, ...]
    fixed: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class StudyGrid:
    name: str
    sweeps: tuple[MethodSweep, ...]
    datasets: tuple[str, ...]  # untwine names, in the reference's order
    reference_datasets: tuple[str, ...]
    num_seeds: int
    steps: int = 300_000
    default_seeds: tuple[int, ...] | None = None  # the seeds run when none are asked for (None: all)
    # TrainConfig values every model of the grid shares, beyond TrainConfig's (the reference's) defaults
    settings: tuple[tuple[str, object], ...] = ()
    # how every model is evaluated: metric names, sample sizes (None: the reference's), per-metric options
    metrics: tuple[str, ...] = REFERENCE_METRICS
    sampled_metrics: tuple[str, ...] | None = None  # those also run on the sampled representation (None: all)
    num_points: int | None = None
    options: dict[str, dict[str, object]] = field(default_factory=dict)
    description: str = ""

    @property
    def num_models(self) -> int:
        return len(self.datasets) * sum(len(s.values) for s in self.sweeps) * self.num_seeds

    def sweep(self, method: str) -> MethodSweep:
        method = METHOD_ALIASES.get(method, method)
        for sweep in self.sweeps:
            if method in (sweep.method, sweep.reference_name):
                return sweep
        known = ", ".join(s.method for s in self.sweeps)
        raise InvalidInputError(f"{self.name} has no method {method!r}; its methods: {known}")


UNSUPERVISED_STUDY_V1 = StudyGrid(
    name="unsupervised_study_v1",
    sweeps=(
        MethodSweep("beta_vae", "beta_vae", "beta", (1.0, 2.0, 4.0, 6.0, 8.0, 16.0)),
        MethodSweep(
            "factor_vae", "factor_vae", "gamma", (10.0, 20.0, 30.0, 40.0, 50.0, 100.0), (("double_count_steps", True),)
        ),
        MethodSweep(
            "dip_vae_i", "dip_vae_i", "lambda_od", (1.0, 2.0, 5.0, 10.0, 20.0, 50.0), (("lambda_d_factor", 10.0),)
        ),
        MethodSweep(
            "dip_vae_ii", "dip_vae_ii", "lambda_od", (1.0, 2.0, 5.0, 10.0, 20.0, 50.0), (("lambda_d_factor", 1.0),)
        ),
        MethodSweep("beta_tcvae", "beta_tc_vae", "beta", (1.0, 2.0, 4.0, 6.0, 8.0, 10.0)),
        MethodSweep(
            "annealed_vae",
            "annealed_vae",
            "c_max",
            (5.0, 10.0, 25.0, 50.0, 75.0, 100.0),
            (("gamma", 1000.0), ("iteration_threshold", 100_000)),
        ),
    ),
    datasets=("dsprites", "color_dsprites", "noisy_dsprites", "scream_dsprites", "smallnorb", "cars3d", "shapes3d"),
    reference_datasets=(
        "dsprites_full",
        "color_dsprites",
        "noisy_dsprites",
        "scream_dsprites",
        "smallnorb",
        "cars3d",
        "shapes3d",
    ),
    num_seeds=50,
    description="Locatello et al. (2019): 7 data sets x 6 methods x 6 values x 50 seeds, 300,000 steps each",
)


def _subset(sweep: MethodSweep, indices: tuple[int, ...], **fixed) -> MethodSweep:
    values = tuple(sweep.values[i] for i in indices)
    return MethodSweep(
        sweep.method, sweep.reference_name, sweep.hyperparameter, values, tuple({**dict(sweep.fixed), **fixed}.items())
    )


# Sized for a 2-core CPU from measurements (docs/design-notes.md, "cpu_study"): the study's design on dSprites and
# Color-dSprites with short training, 72 models in under 3 hours. Every number is a knob on the command line:
# --steps, --seeds (default 0-1; up to 4 extends the study later), --value-indices, --metrics, --sampled-metrics,
# --num-points and --option.
CPU_STUDY_STEPS = 1000
CPU_STUDY = StudyGrid(
    name="cpu_study",
    sweeps=(
        _subset(UNSUPERVISED_STUDY_V1.sweeps[0], (0, 2, 5)),  # beta 1, 4, 16
        # FactorVAE: one step per iteration (the reference's double count would halve a short run's updates)
        _subset(UNSUPERVISED_STUDY_V1.sweeps[1], (0, 3, 5), double_count_steps=False),  # gamma 10, 40, 100
        _subset(UNSUPERVISED_STUDY_V1.sweeps[2], (0, 3, 5)),  # lambda_od 1, 10, 50
        _subset(UNSUPERVISED_STUDY_V1.sweeps[3], (0, 3, 5)),  # lambda_od 1, 10, 50
        _subset(UNSUPERVISED_STUDY_V1.sweeps[4], (0, 2, 5)),  # beta 1, 4, 10
        # AnnealedVAE: the capacity ramp scaled from 100,000 of 300,000 steps to a third of the short run
        _subset(
            UNSUPERVISED_STUDY_V1.sweeps[5], (0, 2, 5), iteration_threshold=CPU_STUDY_STEPS // 3
        ),  # c_max 5, 25, 100
    ),
    datasets=("dsprites", "color_dsprites"),
    reference_datasets=("dsprites_full", "color_dsprites"),
    num_seeds=5,
    default_seeds=(0, 1),
    steps=CPU_STUDY_STEPS,
    settings=(("learning_rate", 5e-4), ("checkpoint_every", 250)),
    metrics=(
        "mig",
        "unsupervised",
        "sap",
        "modularity_explicitness",
        "dci",
        "beta_vae",
        "factor_vae",
        "downstream_logistic_regression",
    ),
    sampled_metrics=("mig", "unsupervised"),  # the sampled representation serves the TC analysis (Fig. 1)
    num_points=1000,  # 1,000 keeps the downstream size 1,000 for the sample efficiency (100 / 1,000)
    # the BetaVAE and FactorVAE scores encode 64 image pairs per point: 200 / 100 and 300 / 150 points
    options={"beta_vae": {"num_train": 200, "num_eval": 100}, "factor_vae": {"num_train": 300, "num_eval": 150}},
    description="unsupervised_study_v1's design for a 2-core CPU: dSprites and Color-dSprites, 6 methods x 3 values "
    "x 2 seeds (of 5), 1,000 steps at Adam 5e-4; the metrics on 1,000 points (BetaVAE / FactorVAE scores on 200 / "
    "300), the sampled representation with MIG and the unsupervised scores only",
)

PRESETS = {grid.name: grid for grid in (UNSUPERVISED_STUDY_V1, CPU_STUDY)}


def get_preset(name: str) -> StudyGrid:
    if name not in PRESETS:
        raise InvalidInputError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def _dataset_index(grid: StudyGrid, dataset: str) -> int:
    for names in (grid.datasets, grid.reference_datasets):
        if dataset in names:
            return names.index(dataset)
    raise InvalidInputError(f"{grid.name} has no data set {dataset!r}; its data sets: {', '.join(grid.datasets)}")


def grid_dataset(grid: StudyGrid, dataset: str) -> str:
    """untwine's name of one of the grid's data sets, given by untwine's or the reference's name."""
    return grid.datasets[_dataset_index(grid, dataset)]


def _check_indices(grid: StudyGrid, sweep: MethodSweep, value_index: int, seed: int) -> None:
    if not 0 <= value_index < len(sweep.values):
        raise InvalidInputError(
            f"value index {value_index} is out of range for {sweep.method} in {grid.name}: 0..{len(sweep.values) - 1} "
            f"({sweep.hyperparameter} = {', '.join(f'{v:g}' for v in sweep.values)})"
        )
    if not 0 <= seed < grid.num_seeds:
        raise InvalidInputError(f"{grid.name} has seeds 0..{grid.num_seeds - 1}, got {seed}")


def study_config(preset: str, method: str, value_index: int, seed: int, dataset: str = "dsprites") -> dict:
    """TrainConfig values of one model of the study (pass them to `TrainConfig.build`)."""
    grid = get_preset(preset)
    sweep = grid.sweep(method)
    _check_indices(grid, sweep, value_index, seed)
    values = {
        "method": sweep.method,
        sweep.hyperparameter: sweep.values[value_index],
        **dict(sweep.fixed),
        "seed": seed,
        "dataset": grid.datasets[_dataset_index(grid, dataset)],
        "steps": grid.steps,
        **dict(grid.settings),
    }
    return values


def model_num(preset: str, method: str, value_index: int, seed: int, dataset: str = "dsprites") -> int:
    """The reference's model number: 1800 D + 50 (6 m + h) + seed for unsupervised_study_v1 (spec §3)."""
    grid = get_preset(preset)
    sweep = grid.sweep(method)
    _check_indices(grid, sweep, value_index, seed)
    m = grid.sweeps.index(sweep)
    per_method = len(sweep.values) * grid.num_seeds
    per_dataset = sum(len(s.values) for s in grid.sweeps) * grid.num_seeds
    return per_dataset * _dataset_index(grid, dataset) + per_method * m + grid.num_seeds * value_index + seed


def model_from_num(preset: str, num: int) -> dict:
    """Inverse of `model_num`: {"dataset", "method", "value_index", "seed"} of the study's model `num`."""
    grid = get_preset(preset)
    if not 0 <= num < grid.num_models:
        raise InvalidInputError(f"{grid.name} has models 0..{grid.num_models - 1}, got {num}")
    per_dataset = grid.num_models // len(grid.datasets)
    d, rest = divmod(num, per_dataset)
    for sweep in grid.sweeps:
        size = len(sweep.values) * grid.num_seeds
        if rest < size:
            h, seed = divmod(rest, grid.num_seeds)
            return {"dataset": grid.datasets[d], "method": sweep.method, "value_index": h, "seed": seed}
        rest -= size
    raise AssertionError("unreachable")


def run_name(config) -> str:
    """A run directory name that says what the run is: <method>-<hyperparameter><value>-seed<seed>."""
    parts = [config.method]
    parts += [f"{name}{value:g}" for name, value in config.hyperparameters().items()]
    return "-".join(parts + [f"seed{config.seed}"])


# ---------------------------------------------------------------------------------------------------------------
# Grids from TOML


@dataclass(frozen=True)
class GridModel:
    """One model of a TOML grid: its TrainConfig and where it sits in the grid."""

    config: TrainConfig
    hyperparameter: str  # the axes of the model's method (besides data set and seed), comma-joined; "" if none
    value: float | None  # the value of the first of them
    value_index: int  # the model's index over its method's combinations of those axes


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def read_grid_toml(path: str | Path) -> tuple[dict, list[GridModel]]:
    """A study grid from TOML: returns (the [study] table, the grid's models in order).

    [study]  optional: name, metrics (list), sampled_metrics (list: those also run on the sampled representation),
             num_points, representations (list), options ({metric: {k: v}})
    [train]  any TrainConfig field; a list makes it an axis of the grid (the grid is the product of its axes).
             A method hyperparameter applies to the listed methods that have it.
    [train.<method>]  fields (and axes) for that method only; the methods are `method` in [train] (a name or a
             list), else the names of these tables.
    Order: data set, method, the method's other axes (in TrainConfig field order), seed innermost.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInputError(f"no study config at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"study", "train"})
    if unknown:
        raise InvalidInputError(f"{path}: unknown table(s) {', '.join(unknown)}; expected [study] and [train]")
    study = dict(data.get("study", {}))
    train = dict(data.get("train", {}))
    fields = list(TrainConfig.model_fields)
    method_tables = {k: train.pop(k) for k in list(train) if isinstance(train[k], dict) and k != "dataset_options"}
    for name in method_tables:
        canonical = METHOD_ALIASES.get(name, name)
        if canonical not in METHOD_HYPERPARAMETERS:
            raise InvalidInputError(f"{path}: [train.{name}] is neither a TrainConfig field nor a method")
    unknown = sorted(k for k in train if k not in fields)
    if unknown:
        raise InvalidInputError(f"{path}: [train] has unknown field(s) {', '.join(unknown)}")
    methods = [METHOD_ALIASES.get(m, m) for m in _as_list(train.pop("method", list(method_tables) or "beta_vae"))]
    tables = {METHOD_ALIASES.get(k, k): v for k, v in method_tables.items()}
    for name in tables:
        if name not in methods:
            raise InvalidInputError(f"{path}: [train.{name}] names a method that `method` does not list")
    for name in methods:
        if name not in METHOD_HYPERPARAMETERS:
            raise InvalidInputError(f"{path}: unknown method {name!r}; known: {', '.join(METHOD_HYPERPARAMETERS)}")
    own = {h for m in methods for h in METHOD_HYPERPARAMETERS[m]}
    for key in train:
        if key in {h for hs in METHOD_HYPERPARAMETERS.values() for h in hs} and key not in own:
            raise InvalidInputError(f"{path}: no listed method has the hyperparameter {key!r}")
    datasets = _as_list(train.pop("dataset", "dsprites"))
    seeds = _as_list(train.pop("seed", 0))
    models: list[GridModel] = []
    for dataset in datasets:
        for method in methods:
            values = {
                k: v
                for k, v in train.items()
                if k not in {h for hs in METHOD_HYPERPARAMETERS.values() for h in hs}
                or k in METHOD_HYPERPARAMETERS[method]
            }
            values.update(tables.get(method, {}))
            bad = sorted(k for k in values if k not in fields)
            if bad:
                raise InvalidInputError(f"{path}: [train.{method}] has unknown field(s) {', '.join(bad)}")
            axes = [k for k in fields if k in values and isinstance(values[k], list)]
            for index, combo in enumerate(itertools.product(*(values[k] for k in axes))):
                for seed in seeds:
                    resolved = {**values, **dict(zip(axes, combo)), "method": method, "dataset": dataset, "seed": seed}
                    config = TrainConfig.build(**resolved)
                    first = float(combo[0]) if axes and isinstance(combo[0], (int, float)) else None
                    models.append(GridModel(config, ",".join(axes), first, index))
    if not models:
        raise InvalidInputError(f"{path}: the grid is empty (an axis has no values)")
    return study, models
