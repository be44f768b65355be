"""The training loop (DESIGN.md, training/trainer.py).

Seeded and deterministic on CPU: weights are initialised from the run's `init` stream, batches are drawn
i.i.d. with replacement from the `data` stream (spec §2.5: no epochs, no split), and the reparameterisation
noise from the `noise` stream. Checkpoints hold weights, optimiser state and all generator states, so a
killed run resumed with `resume=True` reaches bit-identical weights on CPU. A NaN/inf loss, or one above
`divergence_threshold`, stops the run before the bad update is applied, keeping the last good checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from untwine.config import TrainConfig
from untwine.data import FactorDataset, get_dataset
from untwine.errors import InvalidInputError, TrainingDivergedError
from untwine.methods.factor_vae import discriminator_loss, permute_dims
from untwine.methods.objective import objective_terms
from untwine.nn.discriminator import FactorDiscriminator
from untwine.runs import RunDir
from untwine.seeding import make_generator
from untwine.training.checkpoint import load_checkpoint
from untwine.training.logging import TrainingLog
from untwine.training.trace import TraceRecorder

RESUMABLE_CHANGES = ("steps", "log_every", "checkpoint_every")
ProgressFn = Callable[[int, int, dict[str, float]], None]


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device 'cuda' was asked for but CUDA is not available")
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

    def _prepare_run_dir(self, resume: bool) -> None:
        checkpoints = self.run.checkpoints
        latest = checkpoints.latest()
        if resume:
            if self.run.exists():
                # a resumed run may be extended (more steps); anything else must match what it was trained with
                stored = self.run.config().model_dump()
                asked = self.config.model_dump()
                differ = sorted(k for k in asked if k not in RESUMABLE_CHANGES and stored.get(k) != asked[k])
                if differ:
                    raise InvalidInputError(
                        f"{self.run.path} holds a run with a different config ({', '.join(differ)}); cannot resume it"
                    )
            if latest is not None:
                state = load_checkpoint(latest, self.model, self.optimizers, self.generators, self.modules())
                self.step, self.elapsed = state["step"], state.get("elapsed_s", 0.0)
        elif latest is not None or checkpoints.final.exists():
            raise InvalidInputError(
                f"{self.run.path} already holds a run: use --resume to continue it, or another --out"
            )
        self.run.path.mkdir(parents=True, exist_ok=True)
        self.config.write(self.run.config_path)

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
        extra = {"elapsed_s": self.elapsed, "config": self.config.model_dump()}
        args = (self.model, self.optimizers, self.generators, self.step, extra, self.modules())
        if final:
            self.run.checkpoints.save_final(*args)
        else:
            self.run.checkpoints.save(*args)

    def train(self, resume: bool = False) -> dict[str, float]:
        """Train to `config.steps`; returns the training summary (also merged into results.json as train.*)."""
        self._prepare_run_dir(resume)
        if self.trace:
            self.trace.start(self.model, self.step)
        log = TrainingLog(self.run.path, resume_step=self.step)
        self.model.train()
        sums: dict[str, float] = {}
        count = 0
        start = time.perf_counter()
        start_step = self.step
        try:
            while self.step < self.config.steps:
                terms = self.train_step()
                self.step += self.steps_per_iteration
                if self.trace:
                    self.trace.after_step(self.model, self.step)
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
                count += 1
                if self.step % self.config.log_every == 0 or self.step >= self.config.steps:
                    now = time.perf_counter()
                    values = {k: v / count for k, v in sums.items()}
                    values["elapsed_s"] = self.elapsed + now - start
                    log.write(self.step, values)
                    if self.progress:
                        self.progress(self.step, self.config.steps, values)
                    sums, count = {}, 0
                if self.step % self.config.checkpoint_every == 0 and self.step < self.config.steps:
                    self.elapsed += time.perf_counter() - start
                    start = time.perf_counter()
                    self.save()
        finally:
            log.close()
        self.elapsed += time.perf_counter() - start
        return self.finish(start_step)

    def finish(self, start_step: int) -> dict[str, float]:
        """Write the final checkpoint and the training summary (merged into results.json as train.*)."""
        self.save(final=True)
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
