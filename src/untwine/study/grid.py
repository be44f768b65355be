"""Study grids: the Locatello et al. 2019 `unsupervised_study_v1` as a named preset (spec §3).

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

from dataclasses import dataclass

from untwine.config import METHOD_ALIASES
from untwine.errors import InvalidInputError


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
)

PRESETS = {UNSUPERVISED_STUDY_V1.name: UNSUPERVISED_STUDY_V1}


def get_preset(name: str) -> StudyGrid:
    if name not in PRESETS:
        raise InvalidInputError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def _dataset_index(grid: StudyGrid, dataset: str) -> int:
    for names in (grid.datasets, grid.reference_datasets):
        if dataset in names:
            return names.index(dataset)
    raise InvalidInputError(f"{grid.name} has no data set {dataset!r}; its data sets: {', '.join(grid.datasets)}")


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
