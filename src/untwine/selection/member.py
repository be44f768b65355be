"""A PBT member: one `Trainer` plus what population-based training changes and copies (Estermann et al. 2020;
spec model-selection-methods.md §1.3.3-§1.3.6). It wraps a Trainer without changing training/trainer.py.

What a member's state must hold for an exploit to be a faithful copy. The rPU code's member checkpoint holds
model_state_dict, optim_state_dict, hyperparam_state_dict (beta), batch_size, training_params (the per-round
hyperparameters), scores (the per-round scores) and random_state (numpy, python, torch CPU and GPU generator states);
an exploit copies all of it (§1.3.5). Here, and where each lives in untwine's run checkpoint today
(training/checkpoint.py: model.safetensors, optimizer.safetensors, state.json):

| item                                   | checkpoint today                        | Member                            |
|----------------------------------------|-----------------------------------------|-----------------------------------|
| weights, incl. BatchNorm running stats | yes (`model.state_dict()` has buffers)  | state_dict()["model"]             |
| Adam moments and step                  | yes (optimizer.safetensors)             | state_dict()["optimizers"]        |
| learning rate                          | yes, in Adam's param_groups (restored   | the optimiser's param_groups      |
|                                        | over config.learning_rate on resume)    |                                   |
| batch size                             | config.batch_size only: fixed; a resume | ["hyperparameters"], and the      |
|                                        | with another value is refused           | trainer's config                  |
| beta                                   | config.beta only: fixed, same refusal   | ["hyperparameters"], and the      |
|                                        |                                         | trainer's `hyperparameters` dict  |
| data and noise generator states        | yes (state.json "rng")                  | ["generators"]                    |
| optimiser steps                        | yes ("step")                            | ["step"]                          |
| samples seen                           | no (steps x batch size breaks when the  | ["samples"]                       |
|                                        | batch size changes)                     |                                   |
| per-round hyperparameters and scores   | no (log.jsonl has training losses only) | ["history"]                       |

`Member.save`/`load` write and read exactly this through training/checkpoint.py (`save_checkpoint` with the member
fields in state.json's extra), so no new file format. The data set itself (D_cur of an rPU leaf run) is not member
state: every member of a generation trains on the same one, and the MWS estimator's N is `len(trainer.dataset)`.

The faithful copy includes the source's generator states, so the copy draws the very batches and noise its source
draws next (with its own, perturbed, batch size); `reseed` gives a member fresh streams (the reference's retry of
a diverged interval "with fresh RNG").

The Trainer API a Ray Tune trainable needs, proposed for training/trainer.py (this module emulates it from outside):

- `Trainer.set_hyperparameters(lr=None, batch_size=None, beta=None)`: lr into the optimiser's param_groups,
  batch size and beta into the config/objective (today: `config` and `hyperparameters` are set at construction).
- `Trainer.train_step(batch_size=None)`: one step on a batch of that size (for the cut-short last batch).
- `Trainer.train_samples(n)` / `train_steps(n)`: train a ready interval in memory, in training mode, without the
  run-directory writes of `train()` (final checkpoint, results.json) that make `train()` an end-of-run call.
- `Trainer.state_dict()` / `load_state_dict()`: weights, optimiser, generators, step, samples, the member fields,
  as tensors in memory (cloned: `Optimizer.load_state_dict` may alias the tensors it is given).
- Resuming with evolved hyperparameters: keep lr/batch size/beta in the checkpoint's state (as here) and let
  `_prepare_run_dir` accept them differing from config.toml, or write the evolved values into config.toml.
- `train()` calls `model.train()` once; anything that evaluates mid-run must restore the mode (BatchNorm):
  `train_step` setting training mode itself would make that robust.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from untwine.errors import InvalidInputError
from untwine.seeding import make_generator
from untwine.selection.pbt_schedule import Hyperparameters, interval_batch_sizes
from untwine.training.checkpoint import load_checkpoint, read_state, save_checkpoint
from untwine.training.trainer import Trainer


def _clone(value):
    """A deep copy in which every tensor is cloned (detached)."""
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return copy.deepcopy(value)


class Member:
    """One member of a PBT population: a Trainer, its evolved hyperparameters, samples seen and its history.

    >>> member = Member(Trainer(config, "runs/m0", dataset), Hyperparameters(lr=1e-4, batch_size=64, beta=4))
    >>> member.train_samples(480_000)            # one ready interval, exactly 480,000 samples
    >>> with member.evaluation(): score = fitness(member.model)
    >>> member.record(round=0, score=score)
    >>> other.copy_from(member); other.set_hyperparameters(perturbed)   # exploit, then explore
    """

    def __init__(self, trainer: Trainer, hyperparameters: Hyperparameters | None = None):
        if "beta" not in trainer.hyperparameters:
            raise InvalidInputError(f"a PBT member evolves beta; method {trainer.config.method} has no beta")
        self.trainer = trainer
        self.samples = 0
        self.history: list[dict] = []
        if hyperparameters is not None:
            self.set_hyperparameters(hyperparameters)

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    @property
    def hyperparameters(self) -> Hyperparameters:
        return Hyperparameters(
            lr=float(self.trainer.optimizer.param_groups[0]["lr"]),
            batch_size=int(self.trainer.config.batch_size),
            beta=self.trainer.hyperparameters["beta"],
        )

    def set_hyperparameters(self, hyperparameters: Hyperparameters) -> None:
        """lr into Adam's param_groups (its moments are kept), batch size and beta into the trainer's config and
        objective."""
        lr, batch_size, beta = hyperparameters.lr, hyperparameters.batch_size, hyperparameters.beta
        if not (lr > 0 and math.isfinite(lr)) or batch_size < 1 or not beta >= 0:
            raise InvalidInputError(f"invalid hyperparameters {hyperparameters}")
        if self.trainer.config.architecture == "rpu_conv" and batch_size < 2:
            raise InvalidInputError("the rpu_conv architecture (BatchNorm) needs batch_size >= 2")
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = lr
        beta = int(beta) if float(beta).is_integer() else float(beta)
        self.trainer.config = self.trainer.config.model_copy(update={"batch_size": batch_size, "beta": float(beta)})
        self.trainer.hyperparameters["beta"] = beta

    def train_samples(self, samples: int) -> dict[str, float]:
        """Train one ready interval of exactly `samples` samples (`interval_batch_sizes`: the last batch cut short,
        one sample fewer when a batch of one would be left), in training mode. Returns the mean loss terms with the
        steps and samples of the interval. A diverging loss raises TrainingDivergedError before its update."""
        trainer = self.trainer
        batch_size = trainer.config.batch_size
        sizes = interval_batch_sizes(samples, batch_size)
        trainer.model.train()
        sums: dict[str, float] = {}
        start = time.perf_counter()
        try:
            for size in sizes:
                if size != trainer.config.batch_size:
                    trainer.config = trainer.config.model_copy(update={"batch_size": size})
                terms = trainer.train_step()
                trainer.step += trainer.steps_per_iteration
                self.samples += size
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
        finally:
            if trainer.config.batch_size != batch_size:
                trainer.config = trainer.config.model_copy(update={"batch_size": batch_size})
            trainer.elapsed += time.perf_counter() - start
        summary = {name: total / len(sizes) for name, total in sums.items()} if sizes else {}
        summary.update(steps=len(sizes), samples=sum(sizes))
        return summary

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[torch.nn.Module]:
        """The model in evaluation mode (BatchNorm running statistics), restoring its mode afterwards."""
        model = self.trainer.model
        was_training = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was_training)

    def record(self, **fields) -> dict:
        """Append this round's record (the caller's fields, e.g. round and score) with the current hyperparameters,
        step and samples; it travels with the member's state (copied by an exploit, as the reference's
        training_params and scores)."""
        entry = {
            **fields,
            "hyperparameters": self.hyperparameters.as_dict(),
            "step": self.trainer.step,
            "samples": self.samples,
        }
        self.history.append(entry)
        return entry

    def reseed(self, seed: int) -> None:
        """Fresh data and noise streams derived from `seed` (the retry of a diverged interval)."""
        for name, generator in self.trainer.generators.items():
            generator.set_state(make_generator(seed, name, generator.device).get_state())

    # the member's state ------------------------------------------------------------------------------------------

    def _fields(self) -> dict:
        return {
            "hyperparameters": self.hyperparameters.as_dict(),
            "samples": self.samples,
            "history": copy.deepcopy(self.history),
        }

    def state_dict(self) -> dict:
        """Everything an exploit copies, as independent copies (tensors cloned)."""
        trainer = self.trainer
        return {
            "model": _clone(trainer.model.state_dict()),
            "modules": {name: _clone(m.state_dict()) for name, m in trainer.modules().items()},
            "optimizers": {name: _clone(o.state_dict()) for name, o in trainer.optimizers.items()},
            "generators": {name: g.get_state().clone() for name, g in trainer.generators.items()},
            "step": trainer.step,
            "elapsed": trainer.elapsed,
            **self._fields(),
        }

    def load_state_dict(self, state: dict) -> None:
        trainer = self.trainer
        trainer.model.load_state_dict(state["model"])
        for name, module in trainer.modules().items():
            module.load_state_dict(state["modules"][name])
        for name, optimizer in trainer.optimizers.items():
            optimizer.load_state_dict(_clone(state["optimizers"][name]))
        for name, generator in trainer.generators.items():
            generator.set_state(state["generators"][name].clone())
        trainer.step, trainer.elapsed = state["step"], state["elapsed"]
        self._load_fields(state)

    def _load_fields(self, fields: dict) -> None:
        self.set_hyperparameters(Hyperparameters(**fields["hyperparameters"]))
        self.samples = fields["samples"]
        self.history = copy.deepcopy(fields["history"])

    def copy_from(self, source: "Member", hyperparameters: Hyperparameters | None = None) -> None:
        """Exploit: take everything of `source` (weights, Adam, hyperparameters, generators, step, samples and
        history); then, if given, the explored `hyperparameters`."""
        if source is self:
            raise InvalidInputError("a member cannot copy itself")
        self.load_state_dict(source.state_dict())
        if hyperparameters is not None:
            self.set_hyperparameters(hyperparameters)

    def save(self, directory: str | Path) -> Path:
        """Write the member's state as one ordinary untwine checkpoint directory (atomic)."""
        trainer = self.trainer
        extra = {"elapsed_s": trainer.elapsed, "config": trainer.config.model_dump(), "member": self._fields()}
        save_checkpoint(
            Path(directory),
            trainer.model,
            trainer.optimizers,
            trainer.generators,
            trainer.step,
            extra,
            trainer.modules(),
        )
        return Path(directory)

    def load(self, directory: str | Path) -> None:
        trainer = self.trainer
        if "member" not in read_state(Path(directory)):  # checked first: a refused load changes nothing
            raise InvalidInputError(f"{directory} is a run checkpoint, not a PBT member's (no member state)")
        state = load_checkpoint(
            Path(directory), trainer.model, trainer.optimizers, trainer.generators, trainer.modules()
        )
        trainer.step, trainer.elapsed = state["step"], state.get("elapsed_s", 0.0)
        self._load_fields(state["member"])
