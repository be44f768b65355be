"""Training throughput of one model: conv64 architecture, batch 64, beta-VAE, steps per second (median).

Measures channels_last (the default) and contiguous NCHW in the same run, interleaved, so their ratio is
meaningful on a noisy machine. The batch is drawn from procedural dSprites on the training device, as in training
(untwine's step includes its data gather, ~1% of it).

`--peer PYTHON` adds disent 0.8.0's conv64 beta-VAE step (benchmarks/disent_step.py, run by PYTHON from the
virtualenv that benchmarks/disent_peer.sh makes; its data pipeline excluded), one timed block per repeat,
interleaved with untwine's, and reports untwine's steps per CPU-second over disent's (issue 11's target: >= 1.5x at
1 thread) and each step's FLOPs.

    python benchmarks/train_throughput.py [--device cuda] [--steps 50] [--repeats 5] [--threads 1]
                                          [--peer /tmp/disent-venv/bin/python] [--peer-malloc default,kept]
                                          [--layouts channels_last,nchw]

untwine's malloc setting is the one `import untwine` applies; run with UNTWINE_MALLOC=default for glibc's. The peer
runs with glibc's default malloc and with the same kept-memory settings (`--peer-malloc`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

import torch
from common import machine, save, timed

from untwine.config import TrainConfig
from untwine.data import get_dataset
from untwine.training.trainer import Trainer

LAYOUTS = {"channels_last": True, "nchw": False}


def step_flops(trainer: Trainer) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.train_step()
    return counter.get_total_flops()


# glibc told to keep freed memory, as `import untwine` does (untwine/_malloc.py), for a like-for-like peer
KEPT_MEMORY = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "2147483647",
    "MALLOC_TOP_PAD_": "1073741824",
}
PEER_MALLOC = {"default": {}, "kept": KEPT_MEMORY}


def peer_block(python: str, steps: int, threads: int, malloc: str) -> dict:
    """One timed block of the peer's step in its own process (CPU seconds of the steps only)."""
    script = Path(__file__).with_name("disent_step.py")
    command = [python, str(script), "--steps", str(steps), "--repeats", "1", "--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env={**env, **PEER_MALLOC[malloc]})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--layouts", default="channels_last,nchw")
    parser.add_argument("--peer", default=None, help="python of disent's virtualenv (benchmarks/disent_peer.sh)")
    parser.add_argument(
        "--peer-malloc",
        default="default,kept",
        help="the peer with glibc's default malloc and/or with freed memory kept (as untwine keeps it)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    dataset = get_dataset("dsprites").to(args.device)
    trainers = {}
    for name in args.layouts.split(","):
        config = TrainConfig(device=args.device, channels_last=LAYOUTS[name], beta=4.0)
        trainers[name] = Trainer(config, f"/tmp/untwine-bench-{name}", dataset=dataset)
        trainers[name].model.train()

    def run(trainer):
        def steps():
            for _ in range(args.steps):
                trainer.train_step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        return steps

    for trainer in trainers.values():  # warm-up
        run(trainer)()
    flops = {name: step_flops(trainer) for name, trainer in trainers.items()}
    per_repeat = {name: [] for name in trainers}
    peers = {f"disent_{m}_malloc": m for m in args.peer_malloc.split(",")} if args.peer else {}
    peer_runs = {name: [] for name in peers}
    for _ in range(args.repeats):  # interleave the variants so that load changes hit both
        for name, trainer in trainers.items():
            per_repeat[name].append(timed(run(trainer), 1))
        for name, malloc in peers.items():
            peer_runs[name].append(peer_block(args.peer, args.steps, torch.get_num_threads(), malloc))
    results = {}
    for name, runs in per_repeat.items():
        walls = [r["wall_s_median"] for r in runs]
        cpus = [r["cpu_s_median"] for r in runs]
        results[name] = {
            "steps_per_second_median": args.steps / statistics.median(walls),
            "steps_per_cpu_second_median": args.steps / statistics.median(cpus),
            "wall_s_per_repeat": walls,
            "cpu_s_per_repeat": cpus,
            "gflop_per_step": flops[name] / 1e9,
        }
    for name, runs in peer_runs.items():
        cpus = [r["cpu_s"][0] for r in runs]
        walls = [r["wall_s"][0] for r in runs]
        results[name] = {
            "steps_per_second_median": args.steps / statistics.median(walls),
            "steps_per_cpu_second_median": args.steps / statistics.median(cpus),
            "wall_s_per_repeat": walls,
            "cpu_s_per_repeat": cpus,
            "gflop_per_step": runs[0]["flops_per_step"] / 1e9,
            "torch": runs[0]["torch"],
        }
    for r in results.values():
        r["gflop_per_cpu_second"] = r["gflop_per_step"] * r["steps_per_cpu_second_median"]
    payload = {"machine": info, "settings": vars(args), "results": results}
    if "channels_last" in results and "nchw" in results:
        payload["channels_last_over_nchw"] = (
            results["channels_last"]["steps_per_second_median"] / results["nchw"]["steps_per_second_median"]
        )
    first = next(iter(trainers))
    payload["untwine_over_disent_steps_per_cpu_second"] = {
        name: results[first]["steps_per_cpu_second_median"] / results[name]["steps_per_cpu_second_median"]
        for name in peer_runs
    }
    path = save(f"train_throughput_{args.device.split(':')[0]}_{torch.get_num_threads()}threads", payload)
    for name, r in results.items():
        print(
            f"{name:14s} {r['steps_per_second_median']:6.2f} steps/s (median), "
            f"{r['steps_per_cpu_second_median']:6.2f} steps/CPU-s, {r['gflop_per_step']:.2f} GFLOP/step, "
            f"{r['gflop_per_cpu_second']:.1f} GFLOP per CPU-s"
        )
    if "channels_last_over_nchw" in payload:
        print(f"channels_last / nchw = {payload['channels_last_over_nchw']:.2f}")
    for name, ratio in payload["untwine_over_disent_steps_per_cpu_second"].items():
        print(f"untwine ({first}) / {name} = {ratio:.2f} (steps per CPU-second)")
    print(f"load average {info['load_average_1_5_15']}; -> {path}")


if __name__ == "__main__":
    main()
