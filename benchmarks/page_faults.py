"""The training step's page-fault tax (issue 11): `untwine train` with glibc's default malloc behaviour vs untwine's
(`untwine/_malloc.py`), whole processes under `/usr/bin/time -v`, alternated so that load changes hit both.

Variants: `default` (UNTWINE_MALLOC=default: glibc as it comes), `untwine` (what `import untwine` sets) and
`env` (the same settings given as glibc's MALLOC_*_ environment variables, trim threshold 16 GiB).

    python benchmarks/page_faults.py [--steps 150] [--repeats 3] [--variants default,untwine,env]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine, save

VARIANTS = {
    "default": {"UNTWINE_MALLOC": "default"},
    "untwine": {},
    "env": {
        "MALLOC_MMAP_THRESHOLD_": "33554432",
        "MALLOC_TRIM_THRESHOLD_": "17179869184",
        "MALLOC_TOP_PAD_": "1073741824",
    },
}
FIELDS = {
    "user_s": r"User time \(seconds\): ([\d.]+)",
    "system_s": r"System time \(seconds\): ([\d.]+)",
    "minor_faults": r"Minor \(reclaiming a frame\) page faults: (\d+)",
    "max_rss_kb": r"Maximum resident set size \(kbytes\): (\d+)",
    "wall": r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)",
}


def seconds(clock: str) -> float:
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


def run_once(variant: str, steps: int, out: Path, threads: int | None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "UNTWINE_MALLOC"}
    env.update(VARIANTS[variant])
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads in the child
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "untwine.cli", "train", "--out", str(out)]
    command += ["--steps", str(steps)]
    load = os.getloadavg()[0]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    row = {"variant": variant, "load_1min_at_start": load}
    for name, pattern in FIELDS.items():
        value = re.search(pattern, done.stderr).group(1)
        row[name] = seconds(value) if name == "wall" else float(value)
    row["cpu_s"] = row["user_s"] + row["system_s"]
    row["steps_per_cpu_second"] = steps / row["cpu_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="default,untwine,env")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 on a shared machine: no OpenMP spin-waits)"
    )
    args = parser.parse_args()
    variants = args.variants.split(",")
    info = machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_once(variants[0], 2, Path(tmp) / "warm", args.threads)  # renders / maps the data set once
        for _ in range(args.repeats):
            for variant in variants:
                rows.append(run_once(variant, args.steps, Path(tmp) / variant, args.threads))
                r = rows[-1]
                print(
                    f"{variant:8s} faults {r['minor_faults'] / 1e6:5.2f} M  sys {r['system_s']:5.2f} s  "
                    f"user {r['user_s']:6.2f} s  wall {r['wall']:6.2f} s  "
                    f"{r['steps_per_cpu_second']:5.2f} steps/CPU-s  "
                    f"max RSS {r['max_rss_kb'] / 1024:6.0f} MB  (load {r['load_1min_at_start']:.1f})",
                    flush=True,
                )
    medians = {
        v: {k: statistics.median(r[k] for r in rows if r["variant"] == v) for k in rows[0] if k != "variant"}
        for v in variants
    }
    path = save(
        f"page_faults_{args.steps}steps_{args.threads or 'default'}threads",
        {"machine": info, "settings": vars(args), "runs": rows, "medians": medians},
    )
    for v, m in medians.items():
        print(
            f"median {v:8s} faults {m['minor_faults'] / 1e6:5.2f} M  sys {m['system_s']:5.2f} s  "
            f"wall {m['wall']:6.2f} s  "
            f"{m['steps_per_cpu_second']:5.2f} steps/CPU-s  max RSS {m['max_rss_kb'] / 1024:6.0f} MB"
        )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
