"""The training loop (DESIGN.md, training/trainer.py).

Seeded and deterministic on CPU: weights are initialised from the run's `init` stream, batches are drawn
i.i.d. with replacement from the `data` stream (spec §2.5: no epochs, no split), and the reparameterisation
noise from the `noise` stream. Checkpoints hold weights, optimiser state and all generator states, so a
killed run resumed with `resume=True` reaches bit-identical weights on CPU, and the same log: the partial sums
of the current log interval are checkpointed too. A NaN/inf loss, or one above `divergence_threshold`, stops the
run before the bad update is applied, keeping the last good checkpoint.

The run directory is locked for the whole of `train` (RunDir.lock). Resuming (`resume=True`) needs a run there;
it continues from the newest checkpoint that loads (final/ included; damaged ones are skipped with an
UntwineWarning). A run that already stands at `config.steps` is left alone (`already_finished`), one asked for
more steps is extended, and one asked for fewer is refused: a run is never shrunk. When final/ is replaced by
different weights, the evaluation results of the old ones are dropped first (RunDir.drop_evaluation).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import torch

from untwine.config import TrainConfig
from untwine.data import FactorDataset, get_dataset
from untwine.errors import CheckpointError, InvalidInputError, StorageError, TrainingDivergedError, UntwineWarning
from untwine.lock import LOCK_FILE
from untwine.methods.factor_vae import discriminator_loss, permute_dims
from untwine.methods.objective import objective_terms
from untwine.nn.discriminator import FactorDiscriminator
from untwine.runs import RunDir
from untwine.seeding import make_generator
from untwine.training.checkpoint import MODEL_FILE, load_checkpoint
from untwine.training.faults import crash_point
from untwine.training.logging import TrainingLog
from untwine.training.trace import TraceRecorder

RESUMABLE_CHANGES = ("steps", "log_every", "checkpoint_every")
ProgressFn = Callable[[int, int, dict[str, float]], None]


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device `name` (cpu, cuda, cuda:1...), or a clear error if it is unknown or absent here."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise InvalidInputError(f"unknown device {name!r}; choose cpu or cuda (or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {str(name)!r} was asked for but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidInputError(f"device {str(name)!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise InvalidInputError(f"device {str(name)!r} is not supported; choose cpu or cuda")
    return device


def dataset_for(config: TrainConfig, device: torch.device | str = "cpu") -> FactorDataset:
    return get_dataset(config.dataset, config.data_dir, config.dataset_source, **config.dataset_options).to(device)


class Trainer:
    """Trains one model of `config` into `run_dir`.

    >>> Trainer(TrainConfig(steps=1000), "runs/a").train()
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: RunDir | str,
        dataset: FactorDataset | None = None,
        progress: ProgressFn | None = None,
    ):
        self.config = config
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.device = resolve_device(config.device)
        self.dataset = (dataset or dataset_for(config)).to(self.device)
        self.progress = progress
        self.model = self.run.build_model(config).to(self.device)
        if tuple(self.dataset.observation_shape) != tuple(self.model.observation_shape):
            raise InvalidInputError(
                f"data set {config.dataset} has observations {self.dataset.observation_shape}, "
                f"model expects {self.model.observation_shape}"
            )
        if config.channels_last and config.architecture == "conv":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_eps,
        )
        self.optimizers = {"vae": self.optimizer}
        self.generators = {
            "data": make_generator(config.seed, "data", self.device),
            "noise": make_generator(config.seed, "noise", self.device),
        }
        self.discriminator = None
        if config.method == "factor_vae":
            # its own seeded stream for initialisation and for the permutations (spec §1.6, §2.3)
            self.discriminator = FactorDiscriminator(
                config.latent_dim, generator=make_generator(config.seed, "discriminator")
            ).to(self.device)
            self.optimizers["discriminator"] = torch.optim.Adam(
                self.discriminator.parameters(),
                lr=config.discriminator_learning_rate,
                betas=(config.discriminator_adam_beta1, config.discriminator_adam_beta2),
                eps=config.adam_eps,
            )
            self.generators["permute"] = make_generator(config.seed, "permute", self.device)
        self.steps_per_iteration = 2 if config.double_count_steps else 1
        self.hyperparameters = config.hyperparameters()
        self.step = 0
        self.elapsed = 0.0
        self.trace = (  # decoder activations for the training-dynamics score (training/trace.py)
            TraceRecorder(self.run.path, self.dataset, config.trace_every, config.trace_samples)
            if config.trace_every
            else None
        )
        self.log_sums: dict[str, float] = {}  # the current log interval's sums and count (checkpointed)
        self.log_count = 0
        self.resumed_from = None  # the checkpoint a resumed run continued from
        self.already_finished = False  # resumed a run that stood at config.steps: nothing was trained

    def _prepare_run_dir(self, resume: bool) -> None:
        """Check the (locked) run directory, load the checkpoint to resume from, and write the config."""
        self._check_run_dir(resume)
        if resume:
            self._resume()
        if not self.already_finished:
            self.run.write_config(self.config)

    def _check_run_dir(self, resume: bool, must_exist: bool = True) -> None:
        """Without `resume` the directory must hold nothing (but the lock); with it, this run (same config up to
        RESUMABLE_CHANGES) — or, unless `must_exist`, nothing yet."""
        run = self.run
        if not resume:
            if run.exists() or run.checkpoints.candidates():
                raise InvalidInputError(
                    f"{run.path} already holds a run: use --resume to continue it, or another --out"
                )
            others = sorted(p.name for p in run.path.iterdir() if p.name != LOCK_FILE) if run.path.is_dir() else []
            if others:
                raise InvalidInputError(
                    f"{run.path} is not empty but holds no run (it has {others[0]}); "
                    "train into a new or empty directory"
                )
            return
        if not run.exists():
            if must_exist or run.checkpoints.candidates():
                raise InvalidInputError(
                    f"{run.path} holds no run to resume (no config.toml); drop --resume to start one"
                )
            return
        # a resumed run may be extended (more steps); anything else must match what it was trained with
        stored = run.config().model_dump()
        asked = self.config.model_dump()
        differ = sorted(k for k in asked if k not in RESUMABLE_CHANGES and stored.get(k) != asked[k])
        if differ:
            raise InvalidInputError(
                f"{run.path} holds a run with a different config ({', '.join(differ)}); cannot resume it"
            )

    def _resume(self, limit: int | None = None) -> int:
        """Load the newest checkpoint that loads (at or below step `limit`), skipping damaged ones with a warning;
        returns its step (0 and nothing loaded if there is none). Sets `already_finished` for a run whose final
        checkpoint stands at config.steps; refuses one beyond config.steps."""
        self.already_finished, self.resumed_from, damaged = False, None, []
        for step, path in self.run.checkpoints.candidates():
            if limit is not None and step is not None and step > limit:
                continue
            try:
                state = load_checkpoint(path, self.model, self.optimizers, self.generators, self.modules())
            except CheckpointError as exc:
                damaged.append(f"{path.name}: {exc}")
                continue
            if limit is not None and state["step"] > limit:
                continue
            self.step, self.elapsed, self.resumed_from = state["step"], state.get("elapsed_s", 0.0), path
            log = state.get("log", {})
            self.log_sums, self.log_count = dict(log.get("sums", {})), int(log.get("count", 0))
            break
        else:
            if damaged:
                raise CheckpointError(
                    f"{self.run.path} has no intact checkpoint to resume from ({'; '.join(damaged)}); "
                    "move the run aside and train again"
                )
            if limit is None and self.run.exists():
                message = f"{self.run.path} has no checkpoint yet: training from step 0"
                warnings.warn(message, UntwineWarning, stacklevel=2)
            return 0
        if damaged:
            skipped = "; ".join(damaged)
            message = f"{self.run.path}: skipped damaged {skipped}; resuming from {path.name} at step {self.step}"
            warnings.warn(message, UntwineWarning, stacklevel=2)
        if self.step > self.config.steps:
            raise InvalidInputError(
                f"{self.run.path} stands at step {self.step}, beyond the {self.config.steps} steps asked for: a run is "
                f"never shrunk (ask for at least {self.step} steps to continue it, or use another --out)"
            )
        self.already_finished = self.step == self.config.steps and path == self.run.checkpoints.final
        return self.step

    def modules(self) -> dict[str, torch.nn.Module]:
        """Networks checkpointed beside the model (FactorVAE's discriminator)."""
        return {"discriminator": self.discriminator} if self.discriminator is not None else {}

    def train_step(self) -> dict[str, torch.Tensor]:
        """One Adam step on one batch; returns the loss terms (before the update is checked).

        FactorVAE (spec §2.3): both losses come from the same forward pass and both optimisers step together;
        the VAE loss's gradient reaches only encoder and decoder, the discriminator's only the discriminator.
        """
        _, x = self.dataset.sample(self.config.batch_size, self.generators["data"])
        if self.config.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        mean, logvar, z, logits = self.model(x, self.generators["noise"])
        terms = objective_terms(
            self.config.method,
            logits,
            x,
            mean,
            logvar,
            z,
            float(self.step),
            self.hyperparameters,
            discriminator=self.discriminator,
            tc_estimator=self.config.tc_estimator or "reference",
            dataset_size=len(self.dataset),
            kl_estimator=self.config.kl_estimator or "analytic",
        )
        if self.discriminator is not None:
            adversary = discriminator_loss(self.discriminator, z, permute_dims(z, self.generators["permute"]))
            terms["discriminator_loss"] = adversary["discriminator_loss"]
        loss = terms["loss"]
        value = loss.item()
        if not math.isfinite(value) or value > self.config.divergence_threshold:
            raise TrainingDivergedError(self._divergence_message(value))
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.discriminator is not None:
            for parameter in self.discriminator.parameters():
                parameter.grad = None  # the TC term's gradient is not the discriminator's
            adversary["loss"].backward()
        for optimizer in self.optimizers.values():
            optimizer.step()
        return terms

    def _divergence_message(self, value: float) -> str:
        latest = self.run.checkpoints.latest()
        kept = f"last good checkpoint kept: {latest}" if latest else "no checkpoint was written yet"
        what = "is not finite" if not math.isfinite(value) else f"exceeded {self.config.divergence_threshold:g}"
        return f"training diverged at step {self.step + 1}: loss {what} ({value}); {kept}"

    def save(self, final: bool = False) -> None:
        """Write a step checkpoint (or final/: first dropping the evaluation of different final weights)."""
        extra = {
            "elapsed_s": self.elapsed,
            "config": self.config.model_dump(),
            "log": {"sums": self.log_sums, "count": self.log_count},
        }
        args = (self.model, self.optimizers, self.generators, self.step, extra, self.modules())
        try:
            if final:
                if not self._same_as_final():
                    self.run.drop_evaluation()
                self.run.checkpoints.save_final(*args)
            else:
                self.run.checkpoints.save(*args)
        except StorageError as exc:
            latest = self.run.checkpoints.latest()
            kept = f"the last good checkpoint is kept: {latest}" if latest else "no checkpoint was written yet"
            message = f"{exc}; training stopped at step {self.step}, {kept} (continue with --resume)"
            raise StorageError(message) from None

    def _same_as_final(self) -> bool:
        """Whether final/ holds exactly the current weights (then its evaluation results stay valid)."""
        path = self.run.checkpoints.final / MODEL_FILE
        if not path.exists():
            return True  # nothing to keep in step with: evaluation results (if any) cannot describe final/
        try:
            from safetensors.torch import load_file

            stored = load_file(path)
        except Exception:
            return False
        current = self.model.state_dict()
        return stored.keys() == current.keys() and all(torch.equal(stored[k], current[k].cpu()) for k in stored)

    def train(self, resume: bool = False) -> dict[str, float]:
        """Train to `config.steps` holding the run directory's lock; returns the training summary (also merged into
        results.json as train.*)."""
        with self.run.lock("training"):
            return self._train(resume)

    def _train(self, resume: bool) -> dict[str, float]:
        self._prepare_run_dir(resume)
        if self.already_finished:
            return self.finish(self.step)
        if self.trace:
            self.trace.start(self.model, self.step)
        log = TrainingLog(self.run.path, resume_step=self.step)
        self.model.train()
        start = time.perf_counter()
        start_step = self.step
        try:
            while self.step < self.config.steps:
                terms = self.train_step()
                self.step += self.steps_per_iteration
                if self.trace:
                    self.trace.after_step(self.model, self.step)
                crash_point("step")
                for name, value in terms.items():
                    self.log_sums[name] = self.log_sums.get(name, 0.0) + float(value.detach())
                self.log_count += 1
                if self.step % self.config.log_every == 0 or self.step >= self.config.steps:
                    now = time.perf_counter()
                    values = {k: v / self.log_count for k, v in self.log_sums.items()}
                    values["elapsed_s"] = self.elapsed + now - start
                    log.write(self.step, values)
                    if self.progress:
                        self.progress(self.step, self.config.steps, values)
                    self.log_sums, self.log_count = {}, 0
                if self.step % self.config.checkpoint_every == 0 and self.step < self.config.steps:
                    self.elapsed += time.perf_counter() - start
                    start = time.perf_counter()
                    self.save()
        finally:
            log.close()
        self.elapsed += time.perf_counter() - start
        return self.finish(start_step)

    def finish(self, start_step: int) -> dict[str, float]:
        """Write the final checkpoint (unless the run was already finished) and the training summary (merged into
        results.json as train.*)."""
        if not self.already_finished:
            self.save(final=True)
        crash_point("summary")
        trained = self.step - start_step
        summary = {"train.global_step": self.step, "train.elapsed_s": self.elapsed}
        if trained:
            summary["train.steps_per_second_last_session"] = trained / max(self.elapsed, 1e-9)
        records = self.run.read_log()
        if records:
            last = records[-1]
            summary.update({f"train.{k}": v for k, v in last.items() if k not in ("step", "elapsed_s")})
        self.run.update_results(summary)
        return summary


def train(config: TrainConfig, out: str, resume: bool = False, progress: ProgressFn | None = None) -> RunDir:
    """Train a model of `config` into the run directory `out` (resuming it if asked); returns the RunDir."""
    trainer = Trainer(config, out, progress=progress)
    trainer.train(resume=resume)
    return trainer.run
