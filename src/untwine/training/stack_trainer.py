"""Train K runs of one method as one ModelStack (DESIGN.md: nn/stack.py; issue "stacked training").

The K runs may differ only in their seed and in the values of the method's hyperparameters. Each member keeps
everything a separate run has: its own initialisation (`init` stream of its seed), its own batches (`data`),
its own reparameterisation noise (`noise`), its own Adam moments (slices of one Adam over the stacked
parameters: Adam is elementwise), its own run directory with config, JSONL/TensorBoard log, checkpoints and
results. Checkpoints are written per run in the ordinary single-run format, so a member is loaded, evaluated,
reported, or resumed alone exactly like a run trained by `Trainer`. The stack holds every member's lock while it
trains. Its members' checkpoints are written one after another, so a stack killed in between leaves members at
different steps: a stack resumes from the newest step at which every member has an intact checkpoint (members
keep their previous checkpoint, so that step is at most one checkpoint interval back), which makes a resumed
stack bit-identical to an uninterrupted one whatever the kill point.

Not stacked: FactorVAE (each member would also need its own discriminator and second optimiser); `untwine train`
trains FactorVAE sweeps one run after another.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Sequence

import torch

from untwine.config import HYPERPARAMETERS, TrainConfig
from untwine.data import FactorDataset
from untwine.errors import InvalidInputError, TrainingDivergedError, UntwineWarning
from untwine.methods.objective import objective_terms
from untwine.nn.stack import ModelStack, stack_batches, stacked_terms
from untwine.runs import RunDir
from untwine.training.faults import crash_point
from untwine.training.logging import TrainingLog
from untwine.training.trainer import ProgressFn, Trainer, dataset_for

PER_MEMBER = ("seed", *HYPERPARAMETERS)


def check_stackable(configs: Sequence[TrainConfig]) -> None:
    """Raise unless the configs differ only in seed and hyperparameter values (and are not FactorVAE)."""
    if not configs:
        raise InvalidInputError("a stack needs at least one run")
    if configs[0].method == "factor_vae":
        raise InvalidInputError("factor_vae runs are not stacked (each needs its own discriminator); train them singly")
    if configs[0].trace_every:
        raise InvalidInputError("traced runs (trace_every) are not stacked yet; train them singly")
    shared = {k: v for k, v in configs[0].model_dump().items() if k not in PER_MEMBER}
    for config in configs[1:]:
        other = {k: v for k, v in config.model_dump().items() if k not in PER_MEMBER}
        differ = sorted(k for k in shared if shared[k] != other[k])
        if differ:
            raise InvalidInputError(
                f"stacked runs may differ only in seed and hyperparameters, not {', '.join(differ)}"
            )


class StackTrainer:
    """Trains `configs[k]` into `run_dirs[k]` for every k, as one batched computation.

    >>> configs = [TrainConfig(method="beta_tcvae", beta=b, seed=s) for b in (1, 4) for s in (0, 1)]
    >>> StackTrainer(configs, [f"runs/tc/{i}" for i in range(4)]).train()
    """

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        run_dirs: Sequence[RunDir | str],
        dataset: FactorDataset | None = None,
        progress: ProgressFn | None = None,
        mode: str = "auto",
    ):
        configs = list(configs)
        if len(configs) != len(run_dirs):
            raise InvalidInputError(f"{len(configs)} configs but {len(run_dirs)} run directories")
        check_stackable(configs)
        self.config = configs[0]
        self.dataset = dataset or dataset_for(self.config)
        self.members = [Trainer(c, r, dataset=self.dataset) for c, r in zip(configs, run_dirs)]
        self.dataset = self.members[0].dataset  # on the training device
        self.progress = progress
        self.mode = mode
        self.hyperparameters = {
            name: torch.tensor(
                [m.config.hyperparameters()[name] for m in self.members],
                dtype=torch.float32,
                device=self.members[0].device,
            )
            for name in self.config.hyperparameters()
        }

    def _build_stack(self) -> None:
        """Stack the members' (possibly resumed) weights and Adam moments."""
        models = [m.model for m in self.members]
        self.stack = ModelStack.from_models(models, mode=self.mode, channels_last=self.config.channels_last)
        self.stack.to(self.members[0].device)
        config = self.config
        self.optimizer = torch.optim.Adam(
            self.stack.parameters(),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_eps,
        )
        member_params = [dict(m.model.named_parameters()) for m in self.members]
        for name, stacked in self.stack.named_parameters():
            states = [m.optimizer.state.get(params[name]) for m, params in zip(self.members, member_params)]
            if all(states):
                self.optimizer.state[stacked] = {
                    "step": states[0]["step"].clone(),
                    "exp_avg": torch.stack([s["exp_avg"].contiguous() for s in states]),
                    "exp_avg_sq": torch.stack([s["exp_avg_sq"].contiguous() for s in states]),
                }
            elif any(states):
                raise InvalidInputError("some members have optimiser state and others not; resume them singly")

    def _write_back(self) -> None:
        """Copy each member's slice of weights and Adam moments into its own Trainer (for checkpointing)."""
        with torch.no_grad():
            for k, member in enumerate(self.members):
                params = dict(member.model.named_parameters())
                for name, stacked in self.stack.named_parameters():
                    params[name].copy_(stacked[k])
                    state = self.optimizer.state.get(stacked)
                    if state:
                        member.optimizer.state[params[name]] = {
                            "step": state["step"].clone(),
                            "exp_avg": state["exp_avg"][k].clone(),
                            "exp_avg_sq": state["exp_avg_sq"][k].clone(),
                        }

    def _prepare(self, resume: bool) -> None:
        """Check every member's (locked) run directory; on resume, bring every member to the newest step at which
        all of them have an intact checkpoint; write the configs."""
        for member in self.members:
            member._check_run_dir(resume, must_exist=False)
        if resume and not any(m.run.exists() for m in self.members):
            raise InvalidInputError(
                f"none of the runs to resume exists ({self.members[0].run.path}, ...); drop --resume to start them"
            )
        steps = [m._resume() if resume else 0 for m in self.members]
        while len(set(steps)) > 1:
            limit = min(steps)
            for member, step in zip(self.members, steps):
                if step > limit:
                    warnings.warn(
                        f"{member.run.path}: stood at step {step}; resuming the stack at step {limit} or below, where "
                        "every member has a checkpoint",
                        UntwineWarning,
                        stacklevel=2,
                    )
            # fresh members (initial weights, optimiser and generators), then each loads its newest checkpoint <= limit
            self.members = [Trainer(m.config, m.run, dataset=self.dataset) for m in self.members]
            steps = [m._resume(limit) for m in self.members]
        self.step = steps[0]
        for member in self.members:
            if not member.already_finished:
                member.run.write_config(member.config)

    def train_step(self) -> dict[str, torch.Tensor]:
        """One Adam step of every member on its own batch; returns the terms, each [K]."""
        _, x = stack_batches(self.dataset, self.config.batch_size, [m.generators["data"] for m in self.members])
        mean, logvar, z, logits = self.stack(x, [m.generators["noise"] for m in self.members])
        step = float(self.step)

        def objective(logits, x, mean, logvar, z, **hyperparameters):
            return objective_terms(
                self.config.method,
                logits,
                x,
                mean,
                logvar,
                z,
                step,
                hyperparameters,
                tc_estimator=self.config.tc_estimator or "reference",
                dataset_size=len(self.dataset),
            )

        terms = stacked_terms(objective, logits, x, mean, logvar, z, **self.hyperparameters)
        losses = terms["loss"].detach()
        bad = [k for k, v in enumerate(losses.tolist()) if not math.isfinite(v) or v > self.config.divergence_threshold]
        if bad:
            runs = ", ".join(str(self.members[k].run.path) for k in bad)
            raise TrainingDivergedError(
                f"training diverged at step {self.step + 1} in {runs} (loss {losses[bad[0]].item()}); the stack "
                "stopped before the update, every run keeps its last good checkpoint"
            )
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].sum().backward()  # the sum gives each member exactly its own gradient
        self.optimizer.step()
        return terms

    def _save(self, final: bool = False) -> None:
        self._write_back()
        for member in self.members:
            member.step = self.step
            member.save(final=final)
            crash_point("stack.member")

    def train(self, resume: bool = False) -> list[dict[str, float]]:
        """Train every member to `steps` holding every member's lock; returns the members' training summaries."""
        with contextlib.ExitStack() as locks:
            for member in sorted(self.members, key=lambda m: str(m.run.path)):
                locks.enter_context(member.run.lock("training in a stack"))
            return self._train(resume)

    def _train(self, resume: bool) -> list[dict[str, float]]:
        self._prepare(resume)
        if self.step >= self.config.steps:
            return [member.finish(self.step) for member in self.members]
        self._build_stack()
        logs = [TrainingLog(m.run.path, resume_step=self.step) for m in self.members]
        self.stack.train()
        start, start_step = time.perf_counter(), self.step
        elapsed = self.members[0].elapsed
        config = self.config
        try:
            while self.step < config.steps:
                terms = self.train_step()
                self.step += 1
                crash_point("step")
                values = {name: value.detach().tolist() for name, value in terms.items()}
                for k, member in enumerate(self.members):
                    for name, column in values.items():
                        member.log_sums[name] = member.log_sums.get(name, 0.0) + column[k]
                    member.log_count += 1
                if self.step % config.log_every == 0 or self.step >= config.steps:
                    now = elapsed + time.perf_counter() - start
                    for log, member in zip(logs, self.members):
                        own, count = member.log_sums, member.log_count
                        log.write(self.step, {**{k: v / count for k, v in own.items()}, "elapsed_s": now})
                    if self.progress:
                        count = sum(m.log_count for m in self.members)
                        mean_loss = sum(m.log_sums["loss"] for m in self.members) / count
                        self.progress(self.step, config.steps, {"loss": mean_loss, "elapsed_s": now})
                    for member in self.members:
                        member.log_sums, member.log_count = {}, 0
                if self.step % config.checkpoint_every == 0 and self.step < config.steps:
                    self._set_elapsed(elapsed + time.perf_counter() - start)
                    self._save()
        finally:
            for log in logs:
                log.close()
        self._set_elapsed(elapsed + time.perf_counter() - start)
        self._write_back()
        summaries = []
        for member in self.members:
            member.step = self.step
            summaries.append(member.finish(start_step))
        return summaries

    def _set_elapsed(self, seconds: float) -> None:
        for member in self.members:
            member.elapsed = seconds
