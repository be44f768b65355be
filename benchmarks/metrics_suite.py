"""The whole metric suite on one trained model: wall and CPU seconds per metric and representation.

Runs every protocol of `untwine evaluate --metrics all` at the reference's sample counts (spec §5.15) on the mean
and the sampled representation of one run, one metric at a time, so that the breakdown says where the time goes.
CPU seconds include joblib's worker processes (read from /proc). Also times DCI with the explicitly named fast
estimator (importance="lightgbm") on the same codes protocol, for the faithful/fast ratio. Results are written
after every metric, so an interrupted benchmark keeps what it measured.

    python benchmarks/metrics_suite.py [--run runs/demo] [--metrics all] [--representations mean,sampled]
                                       [--num-points N  (a quick look; not the reference counts)]
"""

from __future__ import annotations

import argparse
import os
import time

from common import machine, save, tree_cpu_seconds

from untwine.evaluation.evaluate import evaluate_model, metric_names, scaled_options
from untwine.runs import RunDir

EXTRAS = {"dci_lightgbm": ("dci", {"importance": "lightgbm"})}
HEADLINES = (
    "eval_accuracy",
    "discrete_mig",
    "posterior_mig",
    "disentanglement",
    "SAP_score",
    "modularity_score",
    "IRS",
    "gaussian_total_correlation",
    "10000:mean_test_accuracy",
    "sample_efficiency",
    "mean_fairness:mean_pred:mean_sens",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/demo", help="a trained run directory (e.g. from `untwine demo`)")
    parser.add_argument("--metrics", default="all")
    parser.add_argument("--extras", default=",".join(EXTRAS), help="extra timings: dci_lightgbm, or ''")
    parser.add_argument("--representations", default="mean,sampled")
    parser.add_argument("--num-points", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default=None, help="results file name (default metrics_suite_<device>)")
    args = parser.parse_args()
    run = RunDir(args.run)
    if not run.checkpoints.final.exists():
        raise SystemExit(f"{args.run} holds no trained model: run `untwine demo` first, or pass --run")
    model = run.load_model("final", device=args.device)
    dataset = run.load_dataset(device=args.device)
    jobs = [(name, name, {}) for name in metric_names(args.metrics)]
    jobs += [(extra, *EXTRAS[extra]) for extra in args.extras.split(",") if extra]
    payload = {
        "machine": machine(),
        "run": str(run.path),
        "dataset": run.config().dataset,
        "num_points": args.num_points or "reference",
        "timings": [],
    }
    name = args.name or f"metrics_suite_{args.device}"
    for rep in args.representations.split(","):
        for label, metric, options in jobs:
            if args.num_points:
                options = {**scaled_options(metric, args.num_points), **options}
            wall, cpu, load = time.perf_counter(), tree_cpu_seconds(), os.getloadavg()[0]
            values = evaluate_model(model, dataset, [metric], [rep], options={metric: options})
            wall, cpu = time.perf_counter() - wall, tree_cpu_seconds() - cpu
            prefix = f"eval.{rep}.{metric}."
            headline = {k[len(prefix) :]: v for k, v in values.items() if k[len(prefix) :] in HEADLINES}
            payload["timings"].append(
                {
                    "representation": rep,
                    "metric": label,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "load_1min_at_start": load,
                    "headline": headline,
                }
            )
            path = save(name, dict(payload))
            shown = ", ".join(f"{k} {v:.4f}" for k, v in headline.items())
            print(f"{rep:8s} {label:32s} {wall:8.1f} s wall {cpu:8.1f} CPU-s   {shown}", flush=True)
    rows = payload["timings"]
    for rep in args.representations.split(","):
        reference = [r for r in rows if r["representation"] == rep and r["metric"] not in EXTRAS]
        wall, cpu = sum(r["wall_s"] for r in reference), sum(r["cpu_s"] for r in reference)
        print(f"{rep}: suite {wall:.0f} s wall, {cpu:.0f} CPU-s")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
