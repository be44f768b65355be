"""Deterministic crash points for fault-injection tests: a process SIGKILLs itself at a chosen point.

Set `UNTWINE_CRASH_AT="<point>:<n>"` and the process kills itself with SIGKILL (exactly what `kill -9` does: no
cleanup, no flush, no exit handlers) the n-th time it reaches `crash_point("<point>")`. Points:

    step                  after an optimisation step, before it is logged
    log                   after a log record is written
    checkpoint.partial    inside a checkpoint write: the weights are in the temporary directory, the state is not
    checkpoint.complete   the temporary directory is complete and synced, not yet renamed into place
    checkpoint.swap       replacing an existing checkpoint (final/): the old one is moved aside, the new not in place
    checkpoint.latest     the checkpoint is in place, the `latest` pointer not yet updated
    checkpoint.prune      the pointer is updated, older checkpoints not yet pruned
    stack.member          a stack's save: after each member's checkpoint (members are written one after another)
    summary               the final checkpoint is written, results.json's train.* summary not yet

Without the variable, `crash_point` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "UNTWINE_CRASH_AT"
_seen: dict[str, int] = {}


def crash_point(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    _seen[point] = _seen.get(point, 0) + 1
    name, _, count = spec.rpartition(":")
    if name == point and str(_seen[point]) == count.strip():
        os.kill(os.getpid(), signal.SIGKILL)
