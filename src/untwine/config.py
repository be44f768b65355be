"""Run configuration: a pydantic model, written to and read from `config.toml` in the run directory."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from untwine.errors import InvalidInputError

METHODS = ("vae", "beta_vae")


class TrainConfig(BaseModel):
    """Everything needed to rerun a training run. Defaults are the reference's (spec §2.4–2.5)."""

    model_config = ConfigDict(extra="forbid")

    method: str = "beta_vae"
    beta: float = Field(1.0, ge=0.0, description="weight of the KL term (beta-VAE)")
    dataset: str = "dsprites"
    data_dir: str | None = None
    dataset_source: str = "auto"
    architecture: str = "conv"
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

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown method {value!r}; known: {', '.join(METHODS)}")
        return value

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        if value not in ("conv", "fc"):
            raise ValueError(f"unknown architecture {value!r}; choose conv or fc")
        return value

    @model_validator(mode="after")
    def _vae_has_beta_one(self) -> "TrainConfig":
        if self.method == "vae" and self.beta != 1.0:
            raise ValueError("method 'vae' is beta-VAE with beta = 1; use method 'beta_vae' for other betas")
        return self

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
