"""A PBT member of k models (Estermann et al. 2020 §3.2, PBT-U-VAE; spec model-selection-methods.md §1.4a): k
`Member`s that share the evolved hyperparameters and the minibatch sequence and differ only in their weight
initialisation and reparameterisation noise (the rPU code's UDRVAE with num_models = 5). A supervised member is a
bundle of one.

Shared batches: every model's Trainer is built with its own seed (initialisation and noise streams), then the data
stream of model 0 is copied into the others; as all of them train the same number of samples with the same batch
sizes, their data streams stay in lockstep (a copy or a reseed keeps them so). The models train one after the other
on each interval (rpu_conv has BatchNorm, which `ModelStack` cannot batch); the reference sums the k losses and takes
one Adam step over all parameters, which is the same update, since Adam acts per parameter and model i's parameters
only receive model i's gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from untwine.errors import InvalidInputError
from untwine.seeding import make_generator
from untwine.selection.member import Member
from untwine.selection.pbt_schedule import Hyperparameters


class Bundle:
    """k Members trained on the same batches; hyperparameters, samples and history are shared."""

    def __init__(self, members: Sequence[Member]):
        if not members:
            raise InvalidInputError("a PBT member needs at least one model")
        self.members = list(members)
        data = self.members[0].trainer.generators["data"].get_state()
        for member in self.members[1:]:
            member.trainer.generators["data"].set_state(data.clone())
            member.set_hyperparameters(self.members[0].hyperparameters)

    @property
    def models(self) -> list:
        return [m.model for m in self.members]

    @property
    def hyperparameters(self) -> Hyperparameters:
        return self.members[0].hyperparameters

    @property
    def history(self) -> list[dict]:
        return self.members[0].history

    @property
    def samples(self) -> int:
        return self.members[0].samples

    def set_hyperparameters(self, hyperparameters: Hyperparameters) -> None:
        for member in self.members:
            member.set_hyperparameters(hyperparameters)

    def train_samples(self, samples: int) -> dict[str, float]:
        """One ready interval for every model in turn; returns the mean of their interval summaries."""
        summaries = [member.train_samples(samples) for member in self.members]
        return {key: sum(s[key] for s in summaries) / len(summaries) for key in summaries[0]}

    def record(self, **fields) -> dict:
        entries = [member.record(**fields) for member in self.members]
        return entries[0]

    def reseed(self, seed: int) -> None:
        """Fresh streams: one data stream for all, a noise stream per model (the retry of a diverged interval)."""
        data = make_generator(seed, "data").get_state()
        for i, member in enumerate(self.members):
            member.reseed(seed * 1000 + i + 1)
            member.trainer.generators["data"].set_state(data.clone())

    def state_dict(self) -> list[dict]:
        return [member.state_dict() for member in self.members]

    def load_state_dict(self, state: list[dict]) -> None:
        for member, own in zip(self.members, state, strict=True):
            member.load_state_dict(own)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        for i, member in enumerate(self.members):
            member.save(directory / f"model-{i}")
        return directory

    def load(self, directory: str | Path) -> None:
        directory = Path(directory)
        found = sorted(p.name for p in directory.glob("model-*"))
        if len(found) != len(self.members):
            raise InvalidInputError(f"{directory} holds {len(found)} models, this member has {len(self.members)}")
        for i, member in enumerate(self.members):
            member.load(directory / f"model-{i}")
