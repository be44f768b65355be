"""Fault injection: runs killed with SIGKILL at seeded points (between steps, after log writes, inside checkpoint
writes, between a stack's members' checkpoints, before the summary) and resumed, as often as the schedule says,
end bit-identical to the uninterrupted run: weights, optimiser state, log.jsonl and results.json.

Each session runs in a forked child that kills itself at the scheduled crash point (training/faults.py), so the
kills are deterministic and cost no sleeping. The default suite runs a short seeded subset; `-m slow` the sweep.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from forks import run_forked
from safetensors.torch import load_file

from untwine.config import TrainConfig
from untwine.runs import RunDir
from untwine.training import Trainer
from untwine.training.faults import ENV
from untwine.training.stack_trainer import StackTrainer

SMALL = dict(batch_size=4, log_every=2, checkpoint_every=3)
TIMING = ("elapsed_s", "train.elapsed_s", "train.steps_per_second_last_session")
# crash points and how many times a fresh session of a 12-step run reaches each (3 step checkpoints + final)
POINTS = {
    "step": 12,
    "log": 6,
    "checkpoint.partial": 4,
    "checkpoint.complete": 4,
    "checkpoint.latest": 3,
    "checkpoint.prune": 3,
    "summary": 1,
}
STACK_POINTS = {**POINTS, "stack.member": 8}  # two members: one crash point after each member's checkpoint
STACK_SEED = 5


def schedule(seed: int, kills: int, points: dict[str, int]) -> list[str]:
    """`kills` distinct crash points "point:n" drawn with a seeded generator (n low, so that a resumed session,
    which has fewer steps left, usually still reaches it)."""
    rng = random.Random(seed)
    picked = sorted(rng.sample(sorted(points), kills), key=lambda p: p == "summary")  # the summary ends a run
    return [f"{p}:{rng.randint(1, max(1, points[p] // 2))}" for p in picked]


def _single(tmp_path, name, steps=12):
    return TrainConfig(steps=steps, seed=3, beta=4.0, **SMALL), [tmp_path / name]


def _stack(tmp_path, name, steps=12):
    configs = [TrainConfig(method="beta_tcvae", steps=steps, seed=s, beta=b, **SMALL) for b, s in ((1.0, 0), (6.0, 1))]
    return configs, [tmp_path / f"{name}{k}" for k in range(2)]


def _session(configs, paths, dsprites, resume):
    if isinstance(configs, TrainConfig):
        return lambda: Trainer(configs, paths[0], dataset=dsprites).train(resume=resume)
    return lambda: StackTrainer(configs, paths, dataset=dsprites).train(resume=resume)


def train_with_kills(configs, paths, dsprites, crash_points) -> list[str]:
    """Train, killed at each crash point in turn (each counted within its own session) and resumed, until a session
    finishes; returns the crash points at which a kill happened."""
    killed, resume = [], False
    for point in [*crash_points, None]:
        status = run_forked(_session(configs, paths, dsprites, resume), {ENV: point} if point else {})
        if status == 0:
            return killed
        assert status == -9, f"the session ended with status {status}, not a kill at {point}"
        killed.append(point)
        resume = True
    raise AssertionError("unreachable")


def snapshot(path) -> dict:
    """Everything a resumed run must reproduce: final weights, optimiser state, log and results (timings aside)."""
    run = RunDir(path)
    final = run.checkpoints.final
    return {
        "model": load_file(final / "model.safetensors"),
        "optimizer": load_file(final / "optimizer.safetensors"),
        "log": [{k: v for k, v in r.items() if k not in TIMING} for r in run.read_log()],
        "results": {k: v for k, v in run.read_results().items() if k not in TIMING},
        "state": {k: v for k, v in json.loads((final / "state.json").read_text()).items() if k != "elapsed_s"},
        "leftovers": sorted(p.name for p in run.checkpoints_dir.glob(".*")) + sorted(run.path.glob(".*.tmp")),
    }


def assert_identical(a: dict, b: dict) -> None:
    for part in ("model", "optimizer"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert a["log"] == b["log"]
    assert a["results"] == b["results"]
    assert a["state"] == b["state"]
    assert b["leftovers"] == [], f"temporary entries left: {b['leftovers']}"


def check_schedules(tmp_path, dsprites, make, points, seeds, kills_per_run) -> int:
    configs, reference = make(tmp_path, "reference")
    assert run_forked(_session(configs, reference, dsprites, False)) == 0
    expected = [snapshot(p) for p in reference]
    total = 0
    for seed in seeds:
        crash_points = schedule(seed, kills_per_run, points)
        configs, paths = make(tmp_path, f"killed{seed}-")
        killed = train_with_kills(configs, paths, dsprites, crash_points)
        print(f"schedule {seed}: killed at {killed}")  # shown with -s: the kill points that fired
        total += len(killed)
        for want, path in zip(expected, paths):
            assert_identical(want, snapshot(path))
    return total


def test_schedule_is_seeded_and_spans_the_points():
    assert schedule(1, 5, POINTS) == schedule(1, 5, POINTS)
    drawn = {p.split(":")[0] for seed in range(40) for p in schedule(seed, 3, STACK_POINTS)}
    assert drawn == set(STACK_POINTS)


def test_single_runs_resume_bit_identically_from_seeded_kills(tmp_path, dsprites):
    killed = check_schedules(tmp_path, dsprites, _single, POINTS, seeds=(0, 1), kills_per_run=3)
    assert killed >= 4, f"only {killed} kills happened"


def test_stacks_resume_bit_identically_from_seeded_kills(tmp_path, dsprites):
    # this seed's schedule includes a kill between the two members' checkpoint writes
    assert any(p.startswith("stack.member") for p in schedule(STACK_SEED, 3, STACK_POINTS))
    killed = check_schedules(tmp_path, dsprites, _stack, STACK_POINTS, seeds=(STACK_SEED,), kills_per_run=3)
    assert killed >= 2, f"only {killed} kills happened"


def test_stack_killed_between_members_checkpoints(tmp_path, dsprites):
    """The case of the issue: member 0 has its step-6 checkpoint, member 1 only step 3; the stack resumes at 3."""
    configs, reference = _stack(tmp_path, "reference", steps=9)
    assert run_forked(_session(configs, reference, dsprites, False)) == 0
    configs, paths = _stack(tmp_path, "killed", steps=9)
    # stack.member counts member saves: 1, 2 at step 3; 3 is member 0 at step 6
    assert run_forked(_session(configs, paths, dsprites, False), {ENV: "stack.member:3"}) == -9
    assert [RunDir(p).checkpoints.candidates()[0][0] for p in paths] == [6, 3]
    assert run_forked(_session(configs, paths, dsprites, True)) == 0
    for want, path in zip(reference, paths):
        assert_identical(snapshot(want), snapshot(path))


def test_extension_killed_while_final_is_replaced(tmp_path, dsprites):
    """A finished run extended to more steps, killed after the old final/ was moved aside and before the new one
    landed: the old one is put back, the run resumes, and ends as the run trained straight to the new length."""
    config, reference = _single(tmp_path, "reference")
    assert run_forked(_session(config, reference, dsprites, False)) == 0
    path = tmp_path / "extended"
    assert run_forked(_session(config.model_copy(update={"steps": 6}), [path], dsprites, False)) == 0
    assert run_forked(_session(config, [path], dsprites, True), {ENV: "checkpoint.swap:1"}) == -9
    assert not (path / "checkpoints" / "final").exists()  # moved aside when the kill came
    assert run_forked(_session(config, [path], dsprites, True)) == 0
    # log_every divides 6, so even the log is that of the straight run (the record at step 6 is written either way)
    assert_identical(snapshot(reference[0]), snapshot(path))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_single_run_kill_sweep(tmp_path, dsprites, seed):
    check_schedules(tmp_path, dsprites, _single, POINTS, seeds=(100 + seed,), kills_per_run=4)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_stack_kill_sweep(tmp_path, dsprites, seed):
    check_schedules(tmp_path, dsprites, _stack, STACK_POINTS, seeds=(200 + seed,), kills_per_run=4)
