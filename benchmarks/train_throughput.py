"""Training throughput of one model: conv64 architecture, batch 64, beta-VAE, steps per second (median).

Measures channels_last (the default) and contiguous NCHW in the same run, interleaved, so their ratio is
meaningful on a noisy machine. The batch is drawn from procedural dSprites on the training device, as in training.

    python benchmarks/train_throughput.py [--device cuda] [--steps 50] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import machine, save, timed

from untwine.config import TrainConfig
from untwine.data import get_dataset
from untwine.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    dataset = get_dataset("dsprites").to(args.device)
    trainers = {}
    for name, channels_last in (("channels_last", True), ("nchw", False)):
        config = TrainConfig(device=args.device, channels_last=channels_last, beta=4.0)
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
    per_repeat = {name: [] for name in trainers}
    for _ in range(args.repeats):  # interleave the variants so that load changes hit both
        for name, trainer in trainers.items():
            per_repeat[name].append(timed(run(trainer), 1))
    results = {}
    for name, runs in per_repeat.items():
        walls = [r["wall_s_median"] for r in runs]
        cpus = [r["cpu_s_median"] for r in runs]
        results[name] = {
            "steps_per_second_median": args.steps / statistics.median(walls),
            "steps_per_cpu_second_median": args.steps / statistics.median(cpus),
            "wall_s_per_repeat": walls,
        }
    ratio = results["channels_last"]["steps_per_second_median"] / results["nchw"]["steps_per_second_median"]
    flops_per_step = 6.0e9  # conv64, batch 64, forward + backward (see README's benchmark notes)
    payload = {
        "machine": info,
        "settings": vars(args),
        "results": results,
        "channels_last_over_nchw": ratio,
        "approx_gflops_channels_last": results["channels_last"]["steps_per_second_median"] * flops_per_step / 1e9,
    }
    path = save(f"train_throughput_{args.device.split(':')[0]}_{torch.get_num_threads()}threads", payload)
    for name, r in results.items():
        print(
            f"{name:14s} {r['steps_per_second_median']:6.2f} steps/s (median), "
            f"{r['steps_per_cpu_second_median']:6.2f} steps/CPU-s"
        )
    print(f"channels_last / nchw = {ratio:.2f}; load average {info['load_average_1_5_15']}; -> {path}")


if __name__ == "__main__":
    main()
