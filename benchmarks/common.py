"""Helpers shared by the benchmarks: timing with wall and CPU seconds, machine load, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "load_average_1_5_15": os.getloadavg(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _proc_cpu(pid: int, include_reaped: bool) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if include_reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime of waited-for children
    return ticks / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids.extend(int(k) for k in text)
    return kids


def tree_cpu_seconds() -> float:
    """CPU seconds of this process, its live descendants (e.g. joblib's worker processes) and its reaped children.

    Linux only (reads /proc); elsewhere falls back to this process's `time.process_time()`.
    """
    try:
        total, stack = _proc_cpu(os.getpid(), True), _children(os.getpid())
        while stack:
            pid = stack.pop()
            try:
                total += _proc_cpu(pid, True)
                stack.extend(_children(pid))
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited meanwhile
        return total
    except OSError:
        return time.process_time()


def timed(fn, repeats: int) -> dict:
    """Run fn() `repeats` times; medians of wall and process-CPU seconds."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {
        "wall_s_median": statistics.median(walls),
        "cpu_s_median": statistics.median(cpus),
        "wall_s": walls,
        "cpu_s": cpus,
    }


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "machine_at_start": payload.pop("machine", machine()),
        **payload,
        "load_average_at_end": os.getloadavg(),
    }
    path.write_text(json.dumps(payload, indent=1))
    return path
