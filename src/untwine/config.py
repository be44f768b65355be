"""Run configuration: a pydantic model, written to and read from `config.toml` in the run directory."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from untwine.errors import InvalidInputError

# method -> its hyperparameters and their defaults (the first value of the study's grid, spec §3, and the
# study's fixed settings). A hyperparameter that the method does not use must be left unset.
METHOD_HYPERPARAMETERS: dict[str, dict[str, float]] = {
    "vae": {"beta": 1.0},
    "beta_vae": {"beta": 1.0},
    "annealed_vae": {"gamma": 1000.0, "c_max": 5.0, "iteration_threshold": 100_000},
    "factor_vae": {"gamma": 10.0},
    "beta_tcvae": {"beta": 1.0},
    "dip_vae_i": {"lambda_od": 1.0, "lambda_d_factor": 10.0},
    "dip_vae_ii": {"lambda_od": 1.0, "lambda_d_factor": 1.0},
}
METHODS = tuple(METHOD_HYPERPARAMETERS)
METHOD_ALIASES = {"beta_tc_vae": "beta_tcvae", "betavae": "beta_vae", "factorvae": "factor_vae"}
HYPERPARAMETERS = ("beta", "gamma", "c_max", "iteration_threshold", "lambda_od", "lambda_d_factor")
TC_ESTIMATORS = ("reference", "mws", "mss")
KL_ESTIMATORS = ("analytic", "sample")
ARCHITECTURES = ("conv", "fc", "rpu_conv")  # rpu_conv: the rPU-VAE code's BatchNorm network (nn/conv.py)


def parse_value(raw: str) -> int | float | str | list[int]:
    """A command-line setting's value: an int, a float, a comma-separated list of ints, else the string."""
    raw = raw.strip()
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    if "," in raw:
        try:
            return [int(part) for part in raw.split(",")]
        except ValueError:
            pass
    return raw


def parse_settings(texts: list[str] | None, what: str) -> dict[str, int | float | str | list[int]]:
    """["key=value", ...] -> {key: parse_value(value)}; a malformed entry is a clear error."""
    settings = {}
    for text in texts or []:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"{what} {text!r}: expected key=value")
        settings[key.strip()] = parse_value(raw)
    return settings


class TrainConfig(BaseModel):
    """Everything needed to rerun a training run. Defaults are the reference's (spec §2.4–2.5)."""

    model_config = ConfigDict(extra="forbid")

    method: str = "beta_vae"
    beta: float | None = Field(None, ge=0.0, description="beta-VAE: KL weight; beta-TCVAE: TC weight (1 = VAE)")
    gamma: float | None = Field(None, ge=0.0, description="FactorVAE: TC weight; AnnealedVAE: |KL - C| weight")
    c_max: float | None = Field(None, ge=0.0, description="AnnealedVAE: final capacity C (nats)")
    iteration_threshold: int | None = Field(None, ge=1, description="AnnealedVAE: steps of the linear C ramp")
    lambda_od: float | None = Field(None, ge=0.0, description="DIP-VAE: off-diagonal covariance weight")
    lambda_d_factor: float | None = Field(None, ge=0.0, description="DIP-VAE: diagonal weight / lambda_od")
    tc_estimator: str | None = Field(
        None, description="beta-TCVAE: reference (MWS, constants dropped), mws (with log NM), mss (stratified)"
    )
    kl_estimator: str | None = Field(
        None, description="beta-TCVAE: analytic (None; closed form, disentanglement_lib) or sample (Chen et al.'s code)"
    )
    discriminator_learning_rate: float | None = Field(None, gt=0.0, description="FactorVAE discriminator Adam lr")
    discriminator_adam_beta1: float | None = None
    discriminator_adam_beta2: float | None = None
    double_count_steps: bool | None = Field(
        None, description="FactorVAE: count 2 steps per iteration, as the reference's global step (spec §2.5)"
    )
    dataset: str = "dsprites"
    data_dir: str | None = None
    dataset_source: str = "auto"
    dataset_options: dict[str, int | float | str | list[int]] = Field(
        default_factory=dict, description="the data set's own settings, e.g. cars3d object_order, mpi3d factor_sizes"
    )
    architecture: str = Field("conv", description="conv (reference), fc, or rpu_conv (rPU-VAE's BatchNorm network)")
    latent_dim: int = Field(10, ge=1)
    steps: int = Field(300_000, ge=0)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-4, gt=0.0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    seed: int = Field(0, ge=0)
    device: str = "cpu"
    channels_last: bool = True
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    divergence_threshold: float = Field(1e10, gt=0.0, description="stop if the loss exceeds this")
    trace_every: int = Field(0, ge=0, description="record decoder activations on fixed observations every N steps")
    trace_samples: int = Field(100, ge=2, description="observations traced (drawn from the evaluation seed)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        value = METHOD_ALIASES.get(value, value)
        if value not in METHODS:
            raise ValueError(f"unknown method {value!r}; known: {', '.join(METHODS)}")
        return value

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {value!r}; choose {', '.join(ARCHITECTURES)}")
        return value

    @model_validator(mode="after")
    def _method_hyperparameters(self) -> "TrainConfig":
        """Fill the method's defaults; reject settings that belong to another method."""
        own = METHOD_HYPERPARAMETERS[self.method]
        for name in HYPERPARAMETERS:
            if name in own:
                if getattr(self, name) is None:
                    setattr(self, name, type(own[name])(own[name]))
            elif getattr(self, name) is not None:
                users = [m for m, h in METHOD_HYPERPARAMETERS.items() if name in h]
                raise ValueError(f"{self.method} has no hyperparameter {name} (it belongs to {', '.join(users)})")
        if self.method == "vae" and self.beta != 1.0:
            raise ValueError("method 'vae' is beta-VAE with beta = 1; use method 'beta_vae' for other betas")
        specific = {
            "beta_tcvae": {"tc_estimator": "reference"},
            "factor_vae": {
                "discriminator_learning_rate": 1e-4,
                "discriminator_adam_beta1": 0.5,
                "discriminator_adam_beta2": 0.9,
                "double_count_steps": False,
            },
        }
        for method, settings in specific.items():
            for name, default in settings.items():
                if self.method == method and getattr(self, name) is None:
                    setattr(self, name, default)
                elif self.method != method and getattr(self, name) is not None:
                    raise ValueError(f"{name} is a {method} setting; this run's method is {self.method}")
        if self.architecture == "rpu_conv" and self.batch_size < 2:
            raise ValueError("the rpu_conv architecture (BatchNorm) needs batch_size >= 2 to train")
        if self.kl_estimator is not None and self.method != "beta_tcvae":
            raise ValueError(f"kl_estimator is a beta_tcvae setting; this run's method is {self.method}")
        if self.kl_estimator is not None and self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"unknown kl_estimator {self.kl_estimator!r}; choose {', '.join(KL_ESTIMATORS)}")
        if self.tc_estimator is not None and self.tc_estimator not in TC_ESTIMATORS:
            raise ValueError(f"unknown tc_estimator {self.tc_estimator!r}; choose {', '.join(TC_ESTIMATORS)}")
        return self

    def hyperparameters(self) -> dict[str, float]:
        """The method's hyperparameters with their values, e.g. {"gamma": 10.0} for factor_vae."""
        return {name: getattr(self, name) for name in METHOD_HYPERPARAMETERS[self.method]}

    @classmethod
    def build(cls, **values) -> "TrainConfig":
        """Validate, turning pydantic's report into one clear line."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise InvalidInputError(_one_line(exc)) from None

    def write(self, path: str | Path) -> None:
        data = {k: v for k, v in self.model_dump().items() if v is not None}
        Path(path).write_text(tomli_w.dumps(data))

    @classmethod
    def read(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.exists():
            raise InvalidInputError(f"no config at {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInputError(f"{path} is not valid TOML: {exc}") from None
        return cls.build(**data)


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "invalid config: " + "; ".join(parts)
