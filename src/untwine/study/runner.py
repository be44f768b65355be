"""Run a study on Ray Tune: every pending model of a `StudyDefinition` trained and evaluated by a trial
(`trial.run_unit`), every finished model stored by the driver in one transaction (DESIGN.md, study/runner.py).

Ray starts locally inside the command by default (no dashboard, workers' output off, Ray's own log lines in
`S/logs/ray.log`, temporary files under `$TMPDIR/untwine-ray`); `address="HOST:PORT"` or `"auto"` runs the same
study on an existing cluster, whose nodes must see the study directory (shared file system) and have untwine
installed. Each trial asks for `cpus_per_trial` CPUs and `gpus_per_trial` GPUs (fractional: several models share
one GPU).

Idempotent: models the store holds as done are not scheduled; a trial trains only what its run directory lacks.
A worker that dies (kill -9, out of memory) is retried from the run's checkpoints, up to `max_failures` times
(Tune's FailureConfig); a driver killed and started again finds everything it stored, and re-collects models
whose trials finished meanwhile from their run directories without training them again. A model that fails for
good is stored as failed with its one-line reason, and the study goes on.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from untwine.errors import InvalidInputError, UntwineError
from untwine.study.definition import StudyDefinition
from untwine.study.store import ResultStore
from untwine.study.studydir import StudyDir
from untwine.study.trial import FAULT_ENV, run_unit

# Quiet, offline Ray: no usage statistics, no Tune result files, the classic (silent at verbose=0) output.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_MAX_PENDING_TRIALS_PG": "1",
    # Ray starts its workers at niceness 15 by default: a study's trials then yield the CPU to anything else on the
    # machine (measured: 2 trials on 2 cores under a load of ~20 got a tenth of a core each). The trials are the
    # command's own work, so they run at the driver's priority; set RAY_worker_niceness to change it.
    "RAY_worker_niceness": "0",
}
DEFAULT_TEMP_DIR = Path(tempfile.gettempdir()) / "untwine-ray"
CONNECT_TIMEOUT_S = 5.0
MIN_FREE_BYTES = 256 * 2**20  # a FactorVAE run with its checkpoints takes ~180 MB


class StudyRunError(UntwineError):
    """The study could not start or had to stop (unreachable cluster, no space, ...); everything stored is kept."""


class StudyEvents:
    """What the driver tells its user; the CLI draws a progress bar and a line per finished model."""

    def started(self, pending: int, counts: dict[str, int]) -> None: ...

    def finished(self, model: dict, status: str, reason: str | None, results: dict, counts: dict[str, int]) -> None: ...

    def message(self, text: str) -> None: ...

    def stopped(self) -> None: ...


@dataclass
class RunSummary:
    counts: dict[str, int]
    scheduled: int = 0
    stored: int = 0
    failed: int = 0
    wall_s: float = 0.0
    ray_start_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


def plan_units(models: list[dict], stack_size: int = 1) -> list[dict]:
    """Group models into trials: stacks of up to `stack_size` models that differ only in seed and
    hyperparameters (never FactorVAE, nor traced models: StackTrainer does not record traces); with stack_size 1,
    one model per trial."""
    from untwine.config import HYPERPARAMETERS

    groups: dict[str, list[dict]] = {}
    for model in models:
        config = json.loads(model["config"])
        if stack_size == 1 or config["method"] == "factor_vae" or config.get("trace_every"):
            key = model["model_id"]
        else:
            key = json.dumps({k: v for k, v in config.items() if k not in ("seed", *HYPERPARAMETERS)}, sort_keys=True)
        groups.setdefault(key, []).append(model)
    units = []
    for group in groups.values():
        for start in range(0, len(group), stack_size):
            units.append(
                {
                    "models": [
                        {"model_id": m["model_id"], "config": json.loads(m["config"]), "run_dir": m["run_dir"]}
                        for m in group[start : start + stack_size]
                    ]
                }
            )
    return units


def tune_trial(config: dict) -> None:
    """The Ray Tune trainable: one unit of models (`trial.run_unit`), each finished model reported to the driver."""
    import torch
    from ray import tune

    torch.set_num_threads(max(1, int(round(config["cpus"]))))
    run_unit(
        config["unit"],
        config["evaluation"],
        config["study_dir"],
        report=lambda payload: tune.report({"payload": json.dumps(payload)}),
        device="cuda" if config["gpus"] > 0 else "cpu",
        fault=config.get("fault"),
    )


# ---------------------------------------------------------------------------------------------------------------
# Ray


def check_address(address: str) -> None:
    """Fail within seconds if HOST:PORT does not accept connections (ray.init would keep retrying)."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://"):
        host, sep, port = address[len("ray://") :].rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidInputError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise StudyRunError(
            f"cannot reach a Ray cluster at {address} ({reason}; waited {CONNECT_TIMEOUT_S:g} s)"
        ) from None


class _LogFile(io.TextIOBase):
    """A stand-in for sys.stderr while Ray runs: Ray's driver-side messages go to the study's log file."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, text: str) -> int:
        self.file.write(text)
        self.file.flush()
        return len(text)

    def flush(self) -> None:
        self.file.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        self.file.close()


def _cluster_auth() -> None:
    """Ray >= 2.5x clusters started with token authentication: a driver joining one needs RAY_AUTH_MODE=token to
    present its token (~/.ray/auth_token, or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH). Set it when a token exists and
    the user has not chosen a mode."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").exists()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


@contextmanager
def _quiet(log_path: Path) -> Iterator[None]:
    """Send the driver's stderr (Python's and file descriptor 2, where Ray's C++ core writes) and the `ray`
    loggers to the study's log file for the length of the block."""
    log = _LogFile(log_path)
    ray_logger = logging.getLogger("ray")
    saved = (sys.stderr, ray_logger.handlers[:], ray_logger.propagate, ray_logger.level)
    sys.stderr.flush()
    saved_fd = os.dup(2)
    os.dup2(log.file.fileno(), 2)
    sys.stderr = log
    ray_logger.handlers[:] = [logging.StreamHandler(log)]
    ray_logger.propagate = False
    ray_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        sys.stderr, ray_logger.handlers[:], ray_logger.propagate, level = saved
        ray_logger.setLevel(level)
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        log.close()


@contextmanager
def ray_session(
    address: str | None, num_cpus: int | None, temp_dir: str | Path | None, log_path: Path
) -> Iterator[float]:
    """Ray for the length of the block (started locally unless `address` is given); yields the start-up seconds.
    A Ray the caller started already (tests, notebooks) is used as it is and left running."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    if address:
        check_address(address)
        _cluster_auth()
    start = time.perf_counter()
    import ray

    if ray.is_initialized():
        yield 0.0
        return
    with _quiet(log_path):
        try:
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                temp = Path(temp_dir) if temp_dir else DEFAULT_TEMP_DIR
                temp.mkdir(parents=True, exist_ok=True)
                ray.init(
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    _temp_dir=str(temp),
                )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"at {address}" if address else "locally"
            raise StudyRunError(f"cannot start Ray {where}: {str(exc).strip().splitlines()[0]}") from None
        try:
            yield time.perf_counter() - start
        finally:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------------------------
# The driver


def _fault(name: str) -> int | None:
    """The test hook of `FAULT_ENV` for the driver: `driver_kill_before_store=N` / `driver_kill_after_store=N`."""
    text = os.environ.get(FAULT_ENV, "")
    key, _, value = text.partition("=")
    return int(value) if key == name and value.isdigit() else None


class _Driver:
    """Tune callbacks on the driver: store each reported model (one transaction each) and tell the user."""

    def __init__(self, store: ResultStore, models: dict[str, dict], events: StudyEvents, summary: RunSummary):
        self.store, self.models, self.events, self.summary = store, models, events, summary
        self.settled: set[str] = set()
        self.abort: UntwineError | None = None
        self.kill_before = _fault("driver_kill_before_store")
        self.kill_after = _fault("driver_kill_after_store")

    def _guard(self, action, *args) -> None:
        if self.abort is not None:
            return
        try:
            action(*args)
        except UntwineError as exc:
            self.abort = exc

    def start(self, trial) -> None:
        ids = [m["model_id"] for m in trial.config["unit"]["models"] if m["model_id"] not in self.settled]
        self._guard(self.store.mark_running, ids)

    def result(self, trial, result: dict) -> None:
        if "payload" in result:
            self._guard(self._settle, json.loads(result["payload"]))

    def error(self, trial) -> None:
        error = trial.get_error()
        lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
        cause = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), "the worker died")
        reason = f"the trial failed {trial.num_failures} time(s): {cause}"
        for model in trial.config["unit"]["models"]:
            if model["model_id"] not in self.settled:
                self._guard(self._settle, {"model_id": model["model_id"], "status": "failed", "reason": reason})

    def _settle(self, payload: dict) -> None:
        model_id, status = payload["model_id"], payload["status"]
        if model_id in self.settled:
            return
        if status == "aborted":
            raise StudyRunError(
                f"model {model_id}: {payload['reason']}; the study stopped (everything stored is kept): free space "
                "and run the same command again"
            )
        stored_count = self.summary.stored + self.summary.failed + 1
        if self.kill_before == stored_count:
            os.kill(os.getpid(), signal.SIGKILL)
        results = payload.get("results") or {}
        if status == "done":
            self.store.finish(
                model_id,
                results,
                train_s=results.get("train.elapsed_s", payload.get("train_s")),
                eval_s=payload.get("eval_s"),
                resumed_from_step=payload.get("resumed_from_step"),
            )
            self.summary.stored += 1
        else:
            self.store.fail(model_id, payload.get("reason") or "unknown error")
            self.summary.failed += 1
            self.summary.failures.append((model_id, payload.get("reason") or ""))
        self.settled.add(model_id)
        if self.kill_after == stored_count:
            os.kill(os.getpid(), signal.SIGKILL)
        counts = self.store.counts()
        self.events.finished(self.models[model_id], status, payload.get("reason"), results, counts)


_DRIVERS: dict[str, _Driver] = {}  # Tune pickles its callbacks: they carry a key into this, not the store


def _driver(key: str) -> _Driver:
    return _DRIVERS[key]


def _callbacks(driver: _Driver):
    from ray import tune

    key = f"{os.getpid()}-{id(driver)}"
    _DRIVERS[key] = driver

    class Callback(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            _driver(key).start(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            _driver(key).result(trial, result)

        def on_trial_error(self, iteration, trials, trial, **info):
            _driver(key).error(trial)

    class Stop(tune.Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return _driver(key).abort is not None

    return Callback(), Stop(), key


def check_free_space(path: Path, needed: int = MIN_FREE_BYTES) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise StudyRunError(
            f"no space to train: {free / 2**20:.0f} MB free on the file system of {path}, a model needs up to "
            f"{needed / 2**20:.0f} MB; free space and run the same command again (nothing stored was lost)"
        )


@dataclass
class RunOptions:
    """How a study runs (what it is, is the StudyDefinition)."""

    address: str | None = None  # an existing Ray cluster (HOST:PORT, ray://HOST:PORT or auto); None: local Ray
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    num_cpus: int | None = None  # CPUs of the local Ray (None: all cores)
    max_failures: int = 2  # retries of a trial whose worker died
    stack_size: int = 1
    retry_failed: bool = False
    temp_dir: str | Path | None = None  # Ray's temporary files (None: DEFAULT_TEMP_DIR)

    def __post_init__(self):
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise InvalidInputError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
        if self.max_failures < 0:
            raise InvalidInputError("--max-failures must be >= 0")
        if self.stack_size < 1:
            raise InvalidInputError("--stack-size must be at least 1")

    @property
    def temp(self) -> Path:
        return Path(self.temp_dir) if self.temp_dir else DEFAULT_TEMP_DIR


def run_study(
    definition: StudyDefinition,
    out: str | Path,
    options: RunOptions | None = None,
    events: StudyEvents | None = None,
    **settings,
) -> RunSummary:
    """Train and evaluate every model of `definition` that the study in `out` does not hold as done (or failed,
    unless `retry_failed`), storing each one as it finishes. `settings` are RunOptions fields. Returns what
    happened."""
    options = options or RunOptions(**settings)
    events = events or StudyEvents()
    study = StudyDir(out)
    started = time.perf_counter()
    if study.path.is_dir() and not study.exists():
        if any(p.name not in (".driver.lock", "logs") for p in study.path.iterdir()):
            raise InvalidInputError(
                f"{study.path} is not empty and holds no study (no study.sqlite); choose an empty or new --out"
            )
    study.lock()
    try:
        with study.open(definition.describe(), definition.fingerprint()) as store:
            return _drive(definition, study, store, options, events, started)
    finally:
        study.unlock()


def _drive(definition, study: StudyDir, store: ResultStore, options: RunOptions, events: StudyEvents, started):
    store.reset_running()  # we hold the driver lock: "running" models are left over from a driver that died
    store.register(m.row() for m in definition.models)
    wanted = {m.model_id for m in definition.models}
    statuses = ("pending", "failed") if options.retry_failed else ("pending",)
    pending = [m for m in store.models() if m["model_id"] in wanted and m["status"] in statuses]
    summary = RunSummary(counts=store.counts(), scheduled=len(pending))
    if not pending:
        done = sum(1 for m in store.models() if m["model_id"] in wanted and m["status"] == "done")
        events.message(f"nothing to do: {done} of the {len(wanted)} models are done" + _failed_note(store, wanted))
        summary.wall_s = time.perf_counter() - started
        return summary
    check_free_space(study.path)
    units = plan_units(pending, options.stack_size)
    driver = _Driver(store, {m["model_id"]: m for m in pending}, events, summary)
    with ray_session(options.address, options.num_cpus, options.temp, study.logs_dir / "ray.log") as ray_start_s:
        summary.ray_start_s = ray_start_s
        _check_resources(options.cpus_per_trial, options.gpus_per_trial)
        events.started(len(pending), store.counts())
        _fit(units, definition.evaluation, study, driver, options)
    events.stopped()
    summary.counts = store.counts()
    summary.wall_s = time.perf_counter() - started
    if driver.abort is not None:
        raise driver.abort
    return summary


def _failed_note(store: ResultStore, wanted: set[str]) -> str:
    failed = sum(1 for m in store.models("failed") if m["model_id"] in wanted)
    return f", {failed} failed (rerun them with --retry-failed)" if failed else ""


def _check_resources(cpus_per_trial: float, gpus_per_trial: float) -> None:
    import ray

    total = ray.cluster_resources()
    for name, asked in (("CPU", cpus_per_trial), ("GPU", gpus_per_trial)):
        if asked > total.get(name, 0.0):
            raise StudyRunError(
                f"a trial asks for {asked:g} {name}(s) but the Ray cluster has {total.get(name, 0.0):g}; "
                f"lower --{name.lower()}s-per-trial"
            )


def _fit(units: list[dict], evaluation: dict, study: StudyDir, driver: _Driver, options: RunOptions) -> None:
    from ray import tune

    callback, stopper, key = _callbacks(driver)
    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    tuner_name = f"{study.path.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    tuner = tune.Tuner(
        tune.with_resources(tune_trial, resources),
        param_space={
            "unit": tune.grid_search(units),
            "evaluation": evaluation,
            "study_dir": str(study.path.resolve()),
            "cpus": options.cpus_per_trial,
            "gpus": options.gpus_per_trial,
            "fault": os.environ.get(FAULT_ENV) or None,
        },
        tune_config=tune.TuneConfig(
            reuse_actors=True,
            trial_name_creator=lambda trial: f"models-{trial.config['unit']['models'][0]['model_id']}",
            trial_dirname_creator=lambda trial: f"trial-{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=tuner_name,
            storage_path=str((options.temp / "tune").resolve()),
            verbose=0,
            callbacks=[callback],
            stop=stopper,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
        ),
    )
    try:
        tuner.fit()
    finally:
        _DRIVERS.pop(key, None)
        shutil.rmtree(
            options.temp / "tune" / tuner_name, ignore_errors=True
        )  # Tune's state: the study needs none of it
