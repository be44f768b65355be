"""PBT-VAE on Ray Tune (Estermann et al. 2020 §3; spec model-selection-methods.md §1.3-§1.4): synchronous
population-based training of beta-TCVAEs with a disentanglement fitness, run by Ray Tune's
`PopulationBasedTraining(synch=True)` with untwine's explorer (`pbt_schedule.Explorer`) deciding every generation.

    run_pbt("P", PBTSettings(fitness="mig:1000", population=8, generations=5, interval_samples=20_000))

How the pieces meet:

- A Tune trial is one member (`PBTMember`, a `tune.Trainable`): a `bundle.Bundle` of k models (k = 5 for the UDR
  fitness, else 1). One `step()` = one ready interval of `interval_samples` samples (None: the leaf runs' adaptive
  max(10,000, |D|)) followed by the fitness (`fitness.score`). A diverging loss (NaN/inf) restores the member's
  state from the start of the interval and retries with fresh noise and data streams, up to `max_retries` times
  (the reference: 10); after that the member is dropped from selection: scored 0 with the reason recorded, so the
  truncation step replaces it by a copy of a top member.
- After every interval the member writes its state to `P/members/m<id>/round-<r>/` (safetensors, `Member.save`,
  plus score.json); its Tune checkpoint is a pointer to that directory (Tune keeps no second copy; `num_to_keep`
  is left unset as Ray's PBT needs).
- `_UntwinePBT`, a `PopulationBasedTraining(synch=True)` (Tune pauses every member until all have been scored):
  at the barrier it hands all scores to the `Explorer`, whose decisions replace Tune's: the bottom-k members and
  the top member each copies (Tune restores the copy from the source's checkpoint), the perturbed hyperparameters
  (the trial's new config), the initial-population halving (the removed trials are stopped) and the stop rule
  (every trial is stopped). Tune's own random choices are not used.
- The driver (the scheduler's barrier, one process) writes one row per member per generation into
  `P/study.sqlite` (`ResultStore.add_records`, kind "pbt": fitness, lr, batch_size, beta, samples, loss, exploits
  and removals, and the member's wall and CPU seconds: train_s, score_s, train_cpu_s, score_cpu_s and cpu_s, its
  process's CPU since its previous interval) and one "generation" row (best, stop, generation_wall_s from the
  previous barrier, cpu_s of the members and the driver), with the explorer's state (in the store's meta, the
  same transaction; `P/explorer.json` is a readable copy), and copies the best member over all rounds into
  `P/best/`.
- At the end the best member is re-scored from its stored checkpoint (`export_final`, spec §1.4a step 5: for a
  UDR member argmax u_i of the re-score is the exported model) into `P/final/`, an ordinary run directory
  (`untwine evaluate P/final`); `evaluate_final` evaluates it through `untwine.evaluation` (default: the cpu_study
  preset's metrics) and stores the scores (kind "pbt_final" records, beside the export's).

Resuming (a killed driver started again with the same settings): the explorer's state after its last stored
generation is in the store; every member restarts in a fresh Tune experiment from `members/m<id>/round-<R>/` (or its
exploit source's, with the explored hyperparameters), and a member that had already finished the next interval
before the kill reads its stored result instead of training again. Tune's own experiment restore is not used: it
does not keep the PBT scheduler's state.

Objective (spec §1.2): beta-TCVAE with the rPU code's estimators by default: `tc_estimator="mws"` (Chen et al.'s
minibatch-weighted sampling with its log(NM) constants, N = the current data set's size) and `kl_estimator="sample"`
(the single-sample KL estimate log q(z|x) - log p(z) of Chen et al.'s code); `kl_estimator="analytic"` is the
closed-form KL of disentanglement_lib. The network is `rpu_conv` (the rPU code's BatchNorm network) by default.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from untwine.errors import InvalidInputError, TrainingDivergedError, UntwineError
from untwine.selection import pbt_schedule as schedule
from untwine.selection.fitness import check_points, parse_fitness

SETTINGS_FILE = "pbt.json"
EXPLORER_FILE = "explorer.json"
EXPLORER_META = "pbt_explorer"
STORE_FILE = "study.sqlite"
RECORD_KIND = "pbt"
SCORE_FILE = "score.json"
POINTER_FILE = "member.json"
FAULT_ENV = "UNTWINE_PBT_FAULT"


class PBTRunError(UntwineError):
    """A PBT run could not start or continue; everything stored is kept."""


@dataclass
class PBTSettings:
    """Everything that defines a PBT run (stored as P/pbt.json; a resumed run must ask for the same)."""

    fitness: str = "mig"
    population: int = 56
    generations: int = 17  # fixed-length runs: rounds of training and scoring (the reference's max_epoch + 2)
    stop: str = "fixed"  # "fixed" (PBT-S-VAE) or "converge" (rPU runs; `generations` caps the rounds)
    interval_samples: int | None = 480_000  # samples per ready interval; None: max(10,000, |D|)
    init_population_factor: int = 1  # 2: keep the best half after the first round (supervised runs)
    cutoff: float = schedule.CUTOFF
    failure_threshold: float = schedule.FAILURE_THRESHOLD  # converging runs: stop when the best score is below
    dataset: str = "dsprites"
    data_dir: str | None = None
    dataset_source: str = "auto"
    architecture: str = "rpu_conv"
    latent_dim: int = 10
    models_per_member: int | None = None  # None: 5 for the UDR fitness, else 1
    kl_estimate: str = "code"  # the UDR fitness's KL (rPU code's estimate, or "correct")
    kl_estimator: str = "sample"  # the objective's KL: "sample" (rPU/Chen code) or "analytic"
    tc_estimator: str = "mws"
    seed: int = 0
    max_retries: int = 10
    device: str = "cpu"
    subset: str | None = None  # a .npy of flat grid indices: train on that subset of the data set (rPU levels)
    exploit: bool = True  # False: random search with the same compute (no copies; the best round is exported)

    def __post_init__(self):
        spec = parse_fitness(self.fitness, self.kl_estimate)
        if self.stop not in schedule.STOP_RULES:
            raise InvalidInputError(f"unknown stop rule {self.stop!r}; choose fixed or converge")
        if self.generations < 2:
            raise InvalidInputError(f"a PBT run makes at least 2 generations, got {self.generations}")
        if self.interval_samples is not None and self.interval_samples < 2:
            raise InvalidInputError(f"interval_samples must be >= 2, got {self.interval_samples}")
        if self.init_population_factor < 1 or self.population < 1:
            raise InvalidInputError("population and init_population_factor must be >= 1")
        schedule.truncation_size(self.population // self.init_population_factor, self.cutoff)
        if self.models < 1:
            raise InvalidInputError(f"models_per_member must be >= 1, got {self.models_per_member}")
        if spec.name == "udr" and self.models < 2:
            raise InvalidInputError("the UDR fitness compares the models of a member: models_per_member >= 2")
        if self.kl_estimator not in ("sample", "analytic"):
            raise InvalidInputError(f"unknown kl_estimator {self.kl_estimator!r}; choose sample or analytic")

    @property
    def models(self) -> int:
        if self.models_per_member is not None:
            return self.models_per_member
        return 5 if self.fitness.partition(":")[0] == "udr" else 1

    @property
    def max_epoch(self) -> int:
        """The explorer's max_epoch: `generations` rounds (the reference's "epoch > max_epoch" rule, §1.3.8); a
        converging run stops earlier when its rule fires."""
        return self.generations - 2

    def train_config(self, member: int, model: int, hyperparameters: schedule.Hyperparameters):
        from untwine.config import TrainConfig

        return TrainConfig(
            method="beta_tcvae",
            beta=float(hyperparameters.beta),
            tc_estimator=self.tc_estimator,
            kl_estimator=self.kl_estimator,
            dataset=self.dataset,
            data_dir=self.data_dir,
            dataset_source=self.dataset_source,
            architecture=self.architecture,
            latent_dim=self.latent_dim,
            batch_size=max(int(hyperparameters.batch_size), 2 if self.architecture == "rpu_conv" else 1),
            learning_rate=float(hyperparameters.lr),
            seed=member_seed(self.seed, member, model),
            device=self.device,
            channels_last=False,
            steps=0,
        )


def member_seed(seed: int, member: int, model: int) -> int:
    """The seed of model `model` of member `member` (its initialisation and noise streams)."""
    return int(np.random.SeedSequence([seed, member, model]).generate_state(1)[0] >> 1)


def _atomic_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)


def _replace_dir(source: Path, target: Path) -> None:
    """Copy the directory `source` to `target`, replacing it as a whole."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    old = target.with_name(target.name + ".old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _fault(name: str) -> int | None:
    """Test hooks (`UNTWINE_PBT_FAULT`): `driver_kill_after_generation=N` (kill -9 the driver once generation N
    is stored), `nan_member=M` (every training step of member M diverges)."""
    for part in os.environ.get(FAULT_ENV, "").split(","):
        key, _, value = part.partition("=")
        if key.strip() == name and value.strip().isdigit():
            return int(value)
    return None


def train_interval(bundle, samples: int, max_retries: int, seed_for) -> tuple[dict, int, str | None]:
    """One ready interval with the reference's retry rule (§1.3.9): a diverging loss restores the state of the
    interval's start and retries with fresh streams (`seed_for(attempt)`), up to `max_retries` times. Returns
    (summary, failures, reason): reason is None on success, else why the member is dropped (its state is then the
    interval's start)."""
    state, failures = bundle.state_dict(), 0
    while True:
        try:
            return bundle.train_samples(samples), failures, None
        except TrainingDivergedError as exc:
            failures += 1
            bundle.load_state_dict(state)
            if failures > max_retries:
                return {}, failures, f"diverged {failures} times ({str(exc).split(';')[0]})"
            bundle.reseed(seed_for(failures))


def round_dir(out: Path, member: int, round: int) -> Path:
    return Path(out) / "members" / f"m{member}" / f"round-{round:03d}"


# --- the member: a Tune trainable -------------------------------------------------------------------------------


def build_dataset(settings: PBTSettings, dataset=None):
    """The member's data set: `dataset` (an object, from the API) or the registry's, restricted to `subset`."""
    from untwine.data import get_dataset
    from untwine.data.subset import SubsetDataset

    if dataset is None:
        dataset = get_dataset(settings.dataset, settings.data_dir, settings.dataset_source)
    if settings.subset:
        dataset = SubsetDataset(dataset, np.load(settings.subset))
    return dataset


def build_bundle(settings: PBTSettings, out: Path, member: int, hyperparameters, dataset):
    from untwine.selection.bundle import Bundle
    from untwine.selection.member import Member
    from untwine.training.trainer import Trainer

    members = []
    for i in range(settings.models):
        config = settings.train_config(member, i, hyperparameters)
        trainer = Trainer(config, Path(out) / "members" / f"m{member}" / f"model-{i}", dataset)
        members.append(Member(trainer, hyperparameters))
    return Bundle(members)


def _make_trainable():
    from ray import tune

    class PBTMember(tune.Trainable):
        """One PBT member as a Tune trial (module docstring)."""

        def setup(self, config, dataset=None, extra=None):
            import torch

            torch.set_num_threads(max(1, int(config["run"].get("threads", 1))))
            if config["run"].get("fault"):
                os.environ[FAULT_ENV] = config["run"]["fault"]
            else:
                os.environ.pop(FAULT_ENV, None)
            self.shared_dataset, self.extra = dataset, extra
            self.cpu_mark = time.process_time()  # this process's CPU time when its last interval ended
            self._configure(config)

        def _configure(self, config):
            run = config["run"]
            self.settings = PBTSettings(**run["settings"])
            self.out = Path(run["out"])
            self.spec = parse_fitness(self.settings.fitness, self.settings.kl_estimate)
            unit = config["unit"]
            self.member = int(unit["member"])
            if getattr(self, "dataset", None) is None:
                self.dataset = build_dataset(self.settings, self.shared_dataset)
            hyperparameters = schedule.Hyperparameters(**unit["hyperparameters"])
            self.bundle = build_bundle(self.settings, self.out, self.member, hyperparameters, self.dataset)
            self.round = int(unit["start_round"])
            self.pending_start = unit.get("start_from")  # loaded by step() unless a Tune checkpoint comes first
            self.state_dir = None  # the member directory whose state the bundle holds (None: fresh)

        def _load(self, directory):
            self.bundle.load(directory)
            self.bundle.set_hyperparameters(schedule.Hyperparameters(**self.config["unit"]["hyperparameters"]))
            self.state_dir = str(directory)

        def _start(self):
            if self.pending_start is not None:
                self._load(self.pending_start)
                self.pending_start = None

        def reset_config(self, new_config):
            self.config = new_config
            self._configure(new_config)
            return True

        def step(self):
            self._start()
            done = round_dir(self.out, self.member, self.round)
            if (done / SCORE_FILE).exists():  # trained before a kill: read, do not train again
                self.bundle.load(done)
                result = json.loads((done / SCORE_FILE).read_text())
            else:
                result = self._train_and_score()
                # this process's CPU since its last interval ended: restoring (an exploit), training and scoring
                result["cpu_s"] = time.process_time() - self.cpu_mark
                self.bundle.save(done)
                _atomic_json(done / SCORE_FILE, result)
                shutil.rmtree(round_dir(self.out, self.member, self.round - 2), ignore_errors=True)
            self.state_dir = str(done)
            self.round += 1
            self.cpu_mark = time.process_time()
            return {**result, "member": self.member}

        def _train_and_score(self):
            from untwine.selection.fitness import score

            settings = self.settings
            samples = settings.interval_samples or schedule.adaptive_interval(len(self.dataset))
            if _fault("nan_member") == self.member:  # test hook: every step of this member "diverges"
                for m in self.bundle.members:
                    m.trainer.config = m.trainer.config.model_copy(update={"divergence_threshold": 1e-9})
            start, cpu_start = time.perf_counter(), time.process_time()
            summary, failures, reason = train_interval(
                self.bundle,
                samples,
                settings.max_retries,
                lambda attempt: member_seed(settings.seed, self.member, 1000 * (self.round + 1) + attempt),
            )
            if reason is not None:
                reason = f"round {self.round}: {reason}"
            train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
            if reason is None:
                found = score(self.spec, self.bundle.models, self.dataset, **(self.extra or {}))
            else:
                found = {"fitness": 0.0, "error": reason}
            score_cpu_s = time.process_time() - cpu_start - train_cpu_s
            self.bundle.record(round=self.round, score=found["fitness"])
            h = self.bundle.hyperparameters
            return {
                **found,
                "round": self.round,
                "lr": h.lr,
                "batch_size": h.batch_size,
                "beta": h.beta,
                "samples": self.bundle.samples,
                "loss": summary.get("loss", float("nan")),
                "retries": failures,
                "train_s": train_s,
                "score_s": time.perf_counter() - start - train_s,
                "train_cpu_s": train_cpu_s,
                "score_cpu_s": score_cpu_s,
            }

        def save_checkpoint(self, checkpoint_dir):
            self._start()
            pointer = {"path": self.state_dir, "round": self.round}
            _atomic_json(Path(checkpoint_dir) / POINTER_FILE, pointer)

        def load_checkpoint(self, checkpoint_dir):
            """Its own state after a pause, or (an exploit) the source's, then the trial's (explored) values."""
            pointer = json.loads((Path(checkpoint_dir) / POINTER_FILE).read_text())
            self.pending_start = None
            if pointer["path"] is None:  # saved before its first interval: a fresh member
                self._configure(self.config)
                self.pending_start = None
                return
            self._load(pointer["path"])
            self.round = pointer["round"]

    return PBTMember


# --- the explorer inside Ray Tune's synchronous PBT --------------------------------------------------------------


class _Driver:
    """The run's state on the driver: the explorer, the store, the best member; called at every barrier."""

    def __init__(self, out: Path, settings: PBTSettings, explorer: schedule.Explorer, store, best: dict):
        self.out, self.settings, self.explorer, self.store, self.best = out, settings, explorer, store, best
        self.pending: dict[int, schedule.Exploit] = {}
        self.removed: set[int] = set()
        self.done_rounds: set[int] = {r.round for r in explorer.history}
        self.restart_clock()

    def restart_clock(self) -> None:
        """Start timing the next generation now (called again just before Tune starts)."""
        self.started = self.last_barrier = time.perf_counter()
        self.last_cpu = time.process_time()

    def barrier(self, results: dict[int, dict]) -> schedule.RoundResult | None:
        """All members' results of one round: step the explorer, store the rows, export the best, persist."""
        rounds = {r["round"] for r in results.values()}
        if len(rounds) != 1:
            raise PBTRunError(f"members reported different rounds {sorted(rounds)}; cannot synchronise")
        round = rounds.pop()
        if round in self.done_rounds:
            return None
        scores = {m: float(r["fitness"]) for m, r in results.items()}
        own = dict(self.explorer.hyperparameters)
        result = self.explorer.step(scores)
        if not self.settings.exploit:  # random search: every member keeps its own state and values
            result.exploits = []
            self.explorer.hyperparameters = {m: own[m] for m in self.explorer.hyperparameters}
        self.done_rounds.add(round)
        if result.new_best:
            best = result.best
            _replace_dir(round_dir(self.out, best, round), self.out / "best")
            self.best = {
                "member": best,
                "round": round,
                "fitness": result.best_score,
                "model": int(results[best].get("best_model", 0)),
                "hyperparameters": {k: results[best][k] for k in schedule.EVOLVED},
            }
        self.pending = {e.target: e for e in result.exploits}
        self.removed = set(result.removed)
        self._store(round, results, result)
        return result

    def _store(self, round: int, results: dict[int, dict], result: schedule.RoundResult) -> None:
        rows = []
        now, cpu = time.perf_counter(), time.process_time()
        timing = generation_timing(results, now - self.last_barrier, cpu - self.last_cpu)
        self.last_barrier, self.last_cpu = now, cpu
        for member, values in sorted(results.items()):
            model_id = f"m{member}"
            for key in ("fitness", "lr", "batch_size", "beta", "samples", "loss", "retries", *TIMING_KEYS):
                if key in values and values[key] is not None:
                    rows.append({"model_id": model_id, "step": round, "key": key, "value": values[key]})
            for key in ("error", "model_scores", "num_informative", "leaf_run_migs"):
                if key in values:
                    rows.append({"model_id": model_id, "step": round, "key": key, "value": values[key]})
        for e in result.exploits:
            event = {"source": e.source, "factors": e.factors, "hyperparameters": e.hyperparameters.as_dict()}
            rows.append({"model_id": f"m{e.target}", "step": round, "key": "exploit", "value": event})
        for member in result.removed:
            rows.append({"model_id": f"m{member}", "step": round, "key": "removed", "value": "initial halving"})
        summary = {
            "best": result.best,
            "best_score": result.best_score,
            "stop": result.stop,
            "wall_s": now - self.started,  # since this driver (process) started the run
            **timing,
        }
        rows.append({"model_id": None, "step": round, "key": "generation", "value": summary})
        state = {"explorer": self.explorer.state_dict(), "best": self.best}
        self.store.add_records(RECORD_KIND, rows, meta={EXPLORER_META: state})  # rows and state: both or neither
        _atomic_json(self.out / EXPLORER_FILE, state)  # a readable copy
        if _fault("driver_kill_after_generation") == round:
            os.kill(os.getpid(), 9)


TIMING_KEYS = ("train_s", "score_s", "train_cpu_s", "score_cpu_s", "cpu_s")


def generation_timing(results: dict[int, dict], wall_s: float, driver_cpu_s: float) -> dict:
    """A generation's wall and CPU time: `generation_wall_s` from the previous generation's barrier (or the driver's
    start) to this one; `cpu_s` the members' CPU (each member's process from the end of its previous interval to
    the end of this one: restoring, training, scoring) plus the driver's; the members' training and scoring CPU
    separately."""

    def total(key: str) -> float:
        return float(sum(float(r.get(key) or 0.0) for r in results.values()))

    return {
        "generation_wall_s": float(wall_s),
        "cpu_s": total("cpu_s") + float(driver_cpu_s),
        "train_cpu_s": total("train_cpu_s"),
        "score_cpu_s": total("score_cpu_s"),
        "driver_cpu_s": float(driver_cpu_s),
    }


_DRIVERS: dict[str, _Driver] = {}


def _register_driver(key: str, driver: _Driver) -> None:
    _DRIVERS[key] = driver


def _driver_for(key: str) -> _Driver:
    return _DRIVERS[key]


def _scheduler_class():
    from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

    class UntwinePBT(PopulationBasedTraining):
        """Ray Tune's synchronous PBT whose choices are the untwine explorer's (module docstring)."""

        def __init__(self, driver: _Driver):
            super().__init__(
                time_attr="training_iteration",
                metric="fitness",
                mode="max",
                perturbation_interval=1,
                synch=True,
                quantile_fraction=driver.settings.cutoff,
                custom_explore_fn=lambda config: config,
                log_config=False,
                require_attrs=True,
            )
            self.driver_key = f"{os.getpid()}-{id(driver)}"
            _register_driver(self.driver_key, driver)  # Tune pickles the scheduler: the driver (SQLite) stays here
            self._cache: tuple[list, list] = ([], [])
            self._last_round: int | None = None

        @property
        def driver(self) -> _Driver:
            return _driver_for(self.driver_key)

        @staticmethod
        def _member(trial) -> int:
            return int(trial.config["unit"]["member"])

        def _quantiles(self):
            live = [t for t, s in self._trial_state.items() if not t.is_finished() and s.last_result]
            results = {self._member(t): self._trial_state[t].last_result for t in live}
            rounds = {r.get("round") for r in results.values()}
            if len(rounds) != 1 or rounds == {self._last_round}:
                return self._cache
            self._last_round = rounds.pop()
            result = self.driver.barrier(results)
            if result is None or result.stop:
                self._cache = ([], [])
                return self._cache
            by_member = {self._member(t): t for t in live}
            k = schedule.truncation_size(len(self.driver.explorer.members), self.driver.settings.cutoff)
            kept = [m for m in result.ranked if m not in set(result.removed)]
            upper = [by_member[m] for m in kept[:k]]
            lower = [by_member[e.target] for e in result.exploits]
            self._cache = (lower, upper)
            return self._cache

        def _checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile):
            exploit = self.driver.pending.get(self._member(trial))
            if trial in lower_quantile and exploit is not None:
                source = next(t for t in upper_quantile if self._member(t) == exploit.source)
                return super()._checkpoint_or_exploit(trial, tune_controller, [source], lower_quantile)
            return super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, [])

        def _get_new_config(self, trial, trial_to_clone):
            exploit = self.driver.pending[self._member(trial)]
            config = copy.deepcopy(trial.config)
            config["unit"]["hyperparameters"] = exploit.hyperparameters.as_dict()
            return config, {}

        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            explorer = self.driver.explorer
            finished = {self._member(t) for t in tune_controller.get_trials() if t.is_finished()}
            drop = set(self.driver.removed) - finished
            if explorer.stopped:
                drop = {self._member(t) for t in tune_controller.get_trials()} - finished
            for other in tune_controller.get_trials():
                if self._member(other) in drop and other is not trial:
                    tune_controller.stop_trial(other)
            if self._member(trial) in drop:
                return TrialScheduler.STOP
            return decision

    return UntwinePBT


# --- the run ----------------------------------------------------------------------------------------------------


@dataclass
class PBTResult:
    out: Path
    stop: str | None
    generations: int
    best: dict
    wall_s: float
    ray_start_s: float = 0.0
    history: list = field(default_factory=list)


def _open(out: Path, settings: PBTSettings):
    """Create the run (settings, store, explorer) or reopen it, refusing different settings."""
    from untwine.study.store import ResultStore

    out.mkdir(parents=True, exist_ok=True)
    stored = out / SETTINGS_FILE
    wanted = asdict(settings)
    if stored.exists():
        previous = json.loads(stored.read_text())
        differ = sorted(k for k in set(previous) | set(wanted) if previous.get(k) != wanted.get(k))
        if differ:
            raise InvalidInputError(
                f"{out} holds a PBT run with different settings ({', '.join(differ)}); use another --out"
            )
    elif any(p.name not in ("logs",) for p in out.iterdir()):
        raise InvalidInputError(f"{out} is not empty and holds no PBT run; use a new or empty directory")
    else:
        _atomic_json(stored, wanted)
    path = out / STORE_FILE
    store = ResultStore(path) if path.exists() else ResultStore.create(path, {"pbt": wanted}, "pbt")
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 7]))
    population = schedule.initial_population(settings.population, rng)
    explorer = schedule.Explorer(
        dict(enumerate(population)),
        rng,
        stop=settings.stop,
        max_epoch=settings.max_epoch,
        cutoff=settings.cutoff,
        init_population_factor=settings.init_population_factor,
        failure_threshold=settings.failure_threshold,
    )
    best = {}
    state = store.meta(EXPLORER_META)
    if state is not None:
        explorer.load_state_dict(state["explorer"])
        best = state["best"]
    return store, explorer, best


def _units(out: Path, explorer: schedule.Explorer) -> list[dict]:
    """Where each member starts: fresh, or from its (or its exploit source's) checkpoint of the last round."""
    last = explorer.history[-1] if explorer.history else None
    sources = {e.target: e.source for e in last.exploits} if last else {}
    units = []
    for member in explorer.members:
        start = None
        if last is not None:
            start = str(round_dir(out, sources.get(member, member), last.round))
        units.append(
            {
                "member": member,
                "hyperparameters": explorer.hyperparameters[member].as_dict(),
                "start_round": 0 if last is None else last.round + 1,
                "start_from": start,
            }
        )
    return units


FINAL_KIND = "pbt_final"  # the store's records of the exported model: its re-score and its evaluation


def load_best_models(out: Path, settings: PBTSettings, best: dict) -> list:
    """The k models of the best member's stored checkpoint (`P/best/model-<i>`), in evaluation mode."""
    from untwine.runs import RunDir
    from untwine.training.checkpoint import load_weights

    hyperparameters = schedule.Hyperparameters(**best["hyperparameters"])
    models = []
    for i in range(settings.models):
        config = settings.train_config(best["member"], i, hyperparameters)
        model = RunDir(out / "best" / f"model-{i}").build_model(config)
        load_weights(model, out / "best" / f"model-{i}")
        models.append(model.eval())
    return models


def rescore_best(out: Path, settings: PBTSettings, best: dict, dataset=None, extra: dict | None = None) -> dict:
    """The export's fresh evaluation of the best member (spec §1.4a step 5): its stored checkpoint loaded anew and
    scored by the run's fitness on the same data set with the same scoring seed (the rPU code's
    `UdrVaeTrainer.export_best_model` builds a new `RandomState(score_random_seed)`); for a UDR member the
    exported model is argmax u_i of this re-score. Scored with one thread, as the members are."""
    import torch

    from untwine.selection.fitness import score

    spec = parse_fitness(settings.fitness, settings.kl_estimate)
    models = load_best_models(out, settings, best)
    threads = torch.get_num_threads()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        torch.set_num_threads(1)
        found = score(spec, models, build_dataset(settings, dataset), **(extra or {}))
    finally:
        torch.set_num_threads(threads)
    found["wall_s"], found["cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
    return found


def export_final(
    out: Path, settings: PBTSettings, best: dict, dataset=None, extra: dict | None = None, store=None
) -> Path:
    """P/final: an ordinary run directory holding the best member's exported model (`untwine evaluate P/final`).

    The best member over all rounds (P/best) is re-scored first (`rescore_best`): a UDR member exports the model
    with the highest u_i of the re-score, as the rPU code does; a one-model member exports its model, re-scored
    too (the rPU code exports MIG/DCI members without scoring them again: the re-score is untwine's check that the
    stored checkpoint gives the fitness it was selected with). results.json holds `pbt.fitness` (the selection
    round's score) and `pbt.export_fitness` (the re-score), and the store the same as `pbt_final` records. Built
    under P/final.tmp and renamed: a killed export leaves no half-written P/final."""
    from untwine.runs import RunDir
    from untwine.study.store import ResultStore

    found = rescore_best(out, settings, best, dataset, extra)
    model = int(found.get("best_model", best["model"])) if "error" not in found else int(best["model"])
    hyperparameters = schedule.Hyperparameters(**best["hyperparameters"])
    target = out / "final"
    tmp = out / "final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    run = RunDir(tmp)
    shutil.copytree(out / "best" / f"model-{model}", run.checkpoints.final)
    state = json.loads((run.checkpoints.final / "state.json").read_text())
    config = settings.train_config(best["member"], model, hyperparameters)
    run.write_config(config.model_copy(update={"steps": int(state["step"])}))
    export = {
        "fitness": best["fitness"],
        "export_fitness": found["fitness"],
        "member": best["member"],
        "round": best["round"],
        "model": model,
        "export_wall_s": found["wall_s"],
        "export_cpu_s": found["cpu_s"],
    }
    for key in ("model_scores", "error", "leaf_run_migs"):
        if key in found:
            export[f"export_{key}"] = found[key]
    run.update_results({f"pbt.{k}": v for k, v in export.items()})
    rows = [{"model_id": f"m{best['member']}", "step": best["round"], "key": k, "value": v} for k, v in export.items()]
    if store is not None:
        store.add_records(FINAL_KIND, rows)
    else:
        with contextlib.closing(ResultStore(out / STORE_FILE)) as own:
            own.add_records(FINAL_KIND, rows)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def final_evaluation(
    metrics=None,
    num_points: int | None = None,
    options: dict | None = None,
    sampled_metrics=None,
    representations=("mean", "sampled"),
) -> dict:
    """The evaluation of an exported model (`evaluate_final`) in the study's form (`study.definition.
    evaluation_settings`). metrics=None: the cpu_study preset's evaluation, the run report's metric set (MIG, the
    unsupervised scores, SAP, modularity/explicitness, DCI, BetaVAE and FactorVAE scores, logistic-regression
    downstream; the sampled representation for MIG and the unsupervised scores; 1,000 points, BetaVAE/FactorVAE
    scores on 200/300), `num_points`, `sampled_metrics` and `options` ({metric: {setting: value}}) replacing its
    own where given. Otherwise exactly the metrics asked for, num_points None being the reference's sizes."""
    from untwine.study.definition import evaluation_settings
    from untwine.study.grid import CPU_STUDY

    if metrics is None:
        metrics = CPU_STUDY.metrics
        num_points = CPU_STUDY.num_points if num_points is None else num_points
        sampled_metrics = CPU_STUDY.sampled_metrics if sampled_metrics is None else sampled_metrics
        merged = {m: dict(v) for m, v in CPU_STUDY.options.items()}
        for metric, values in (options or {}).items():
            merged.setdefault(metric, {}).update(values)
        options = merged
    return evaluation_settings(metrics, num_points, options, representations, sampled_metrics)


def evaluate_final(out: str | Path, evaluation: dict | None = None, device: str = "cpu", figures: bool = True) -> dict:
    """Evaluate the exported model P/final through `untwine.evaluation` (`evaluate_run`, the path of `untwine
    evaluate`: results in P/final/results.json, matrices under P/final/eval/) with what it still lacks of
    `evaluation` (default `final_evaluation()`), store the new scores in P/study.sqlite (`pbt_final` records, key
    = result key) and draw P/final's figures (the run report's traversals, labelled with the factor each latent
    shares the most information with). Returns the run's results."""
    from untwine.runs import RunDir
    from untwine.study.store import ResultStore
    from untwine.study.trial import evaluate_member

    out = Path(out)
    run = RunDir(out / "final")
    if not (run.path / "config.toml").exists():
        raise InvalidInputError(f"{out} has no exported model (no {run.path}); run or resume the PBT run first")
    evaluation = evaluation or final_evaluation()
    before = run.read_results()
    results, _ = evaluate_member(run, evaluation, device)
    new = {k: v for k, v in results.items() if k.startswith("eval.") and before.get(k) != v}
    if new:
        rows = [{"model_id": "final", "step": None, "key": k, "value": v} for k, v in sorted(new.items())]
        with contextlib.closing(ResultStore(out / STORE_FILE)) as store:
            store.add_records(FINAL_KIND, rows)
    if figures:
        from untwine.viz.report import write_figures

        write_figures(run)
    return results


def run_pbt(
    out: str | Path,
    settings: PBTSettings,
    dataset=None,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_trial: float = 1.0,
    temp_dir: str | Path | None = None,
    extra: dict | None = None,
    max_failures: int = 2,
) -> PBTResult:
    """Run (or resume) the PBT run in `out`; returns where it stopped and its best member.

    dataset: a data set object to train on instead of `settings.dataset` (shipped to the trials by Ray's object
    store); extra: keyword arguments for the fitness (the surrogate-label MIG's leaf runs and images)."""
    from ray import tune

    from untwine.study.runner import DEFAULT_TEMP_DIR, ray_session

    out = Path(out)
    start = time.perf_counter()
    check_points(parse_fitness(settings.fitness, settings.kl_estimate), build_dataset(settings, dataset))
    store, explorer, best = _open(out, settings)
    driver = _Driver(out, settings, explorer, store, best)
    ray_start_s = 0.0
    try:
        if not explorer.stopped:
            temp = Path(temp_dir) if temp_dir else DEFAULT_TEMP_DIR
            with ray_session(address, num_cpus, temp, out / "logs" / "ray.log") as ray_start_s:
                trainable = tune.with_parameters(_make_trainable(), dataset=dataset, extra=extra)
                name = f"pbt-{out.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
                threads = max(1, int(cpus_per_trial))
                tuner = tune.Tuner(
                    tune.with_resources(trainable, {"cpu": cpus_per_trial}),
                    param_space={
                        "unit": tune.grid_search(_units(out, explorer)),
                        "run": {
                            "settings": asdict(settings),
                            "out": str(out.resolve()),
                            "threads": threads,
                            "fault": os.environ.get(FAULT_ENV),
                        },
                    },
                    tune_config=tune.TuneConfig(
                        scheduler=_scheduler_class()(driver),
                        reuse_actors=True,
                        trial_name_creator=lambda t: f"m{t.config['unit']['member']}",
                        trial_dirname_creator=lambda t: f"m{t.config['unit']['member']}-{t.trial_id}",
                    ),
                    run_config=tune.RunConfig(
                        name=name,
                        storage_path=str((temp / "tune").resolve()),
                        verbose=0,
                        failure_config=tune.FailureConfig(max_failures=max_failures),
                        stop={"training_iteration": settings.generations + 1},
                    ),
                )
                driver.restart_clock()
                try:
                    grid = tuner.fit()
                finally:
                    _DRIVERS.clear()
                    shutil.rmtree(temp / "tune" / name, ignore_errors=True)
                errors = [str(r.error).strip().splitlines()[-1] for r in grid if r.error]
                if errors and not explorer.stopped:
                    raise PBTRunError(f"a PBT member failed for good: {errors[0]} (rerun to continue)")
        if not explorer.stopped:
            raise PBTRunError("the PBT run ended before its stop rule (rerun the same command to continue)")
        if driver.best and not (out / "final").exists():
            export_final(out, settings, driver.best, dataset, extra, store)
    finally:
        store.close()
    return PBTResult(
        out=out,
        stop=explorer.stopped,
        generations=len(explorer.history),
        best=driver.best,
        wall_s=time.perf_counter() - start,
        ray_start_s=ray_start_s,
        history=[r.as_dict() for r in explorer.history],
    )


def load_records(out: str | Path):
    """The per-generation rows of a PBT run (a DataFrame: kind, model_id, step, key, value)."""
    from untwine.study.store import ResultStore

    path = Path(out) / STORE_FILE
    if not path.exists():
        raise InvalidInputError(f"{out} holds no PBT run (no {STORE_FILE})")
    with contextlib.closing(ResultStore(path)) as store:
        return store.records(RECORD_KIND)


__all__ = [
    "PBTResult",
    "PBTRunError",
    "PBTSettings",
    "evaluate_final",
    "export_final",
    "final_evaluation",
    "load_records",
    "run_pbt",
]
