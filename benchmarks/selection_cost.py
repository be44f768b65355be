"""What the unsupervised selection scores cost, per group and per model, on a seed group of small traced runs.

Trains `--seeds` runs of the reference conv beta-VAE on dSprites that differ only in the seed (short runs, with
`--trace-every`), then times, each `--repeats` times (medians):
- UDR (lasso and spearman) on `--udr-points` observations (reference: 1,000 in batches of 10): encoding every
  model's codes on the same observations, plus the M (M - 1) pairwise similarities;
- the training-dynamics score of the group from the runs' traces (N = trace steps x trace samples nodes), with
  the seconds of each phase (kernels, diffusion time, diffusion, joint embedding, MMD);
- the tracing overhead during training: seconds per trace entry, beside seconds per training step.

    python benchmarks/selection_cost.py [--seeds 5] [--steps 60] [--trace-every 3] [--trace-samples 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import machine, save, timed

from untwine.config import TrainConfig
from untwine.runs import RunDir
from untwine.selection.dynamics import dynamics_for_runs
from untwine.selection.udr import udr_for_runs
from untwine.training import Trainer
from untwine.training.trace import decoder_activations


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--trace-every", type=int, default=3)
    parser.add_argument("--trace-samples", type=int, default=100)
    parser.add_argument("--udr-points", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dynamics-repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    start_machine = machine()
    root = args.out or Path(tempfile.mkdtemp(prefix="selection-cost-"))
    runs, train_s = [], []
    for seed in range(args.seeds):
        config = TrainConfig(
            steps=args.steps,
            seed=seed,
            beta=4.0,
            trace_every=args.trace_every,
            trace_samples=args.trace_samples,
            checkpoint_every=10**9,
            log_every=args.steps,
        )
        path = root / f"seed{seed}"
        if not RunDir(path).checkpoints.final.exists():
            begin = time.perf_counter()
            Trainer(config, path).train()
            train_s.append(time.perf_counter() - begin)
        runs.append(path)
    model = RunDir(runs[0]).load_model()
    trainer = Trainer(TrainConfig(steps=1, seed=0, trace_samples=args.trace_samples, trace_every=1), root / "probe")
    observations = trainer.trace.observations
    trace_entry = timed(lambda: decoder_activations(model, observations), args.repeats)
    step = timed(trainer.train_step, args.repeats)
    nodes = (args.steps // args.trace_every + 1) * args.trace_samples
    payload = {
        "machine": start_machine,
        "settings": vars(args) | {"out": str(root), "nodes": nodes},
        "train_s_per_run": train_s,
        "trace_entry": trace_entry,
        "train_step": step,
        "per_group": {},
    }
    print(f"trace entry {trace_entry['wall_s_median']:.3f} s vs a training step {step['wall_s_median']:.3f} s")
    for correlation in ("lasso", "spearman"):

        def run_udr(correlation=correlation):
            return udr_for_runs(runs, num_points=args.udr_points, correlation=correlation, store=False)

        payload["per_group"][f"udr_{correlation}"] = timed(run_udr, args.repeats)
        save("selection_cost", dict(payload))  # kept if a later part is interrupted
        print(f"UDR {correlation}: {payload['per_group'][f'udr_{correlation}']}", flush=True)
    phases = []

    def run_dynamics():
        result = dynamics_for_runs(runs, store=False)
        phases.append(result["timings"] | {"t": result["t"], "score": result["score"]})

    payload["per_group"]["dynamics"] = timed(run_dynamics, args.dynamics_repeats)
    payload["dynamics_phases"] = phases
    print(f"dynamics ({nodes} nodes): {payload['per_group']['dynamics']}; phases {phases}")
    payload["per_model_wall_s"] = {k: v["wall_s_median"] / args.seeds for k, v in payload["per_group"].items()}
    payload["per_model_cpu_s"] = {k: v["cpu_s_median"] / args.seeds for k, v in payload["per_group"].items()}
    print(f"per model: wall {payload['per_model_wall_s']}, CPU {payload['per_model_cpu_s']}")
    print(save("selection_cost", payload))


if __name__ == "__main__":
    main()
