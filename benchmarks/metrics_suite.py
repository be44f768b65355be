"""The whole metric suite on one trained model: wall and CPU seconds per metric and representation.

Runs every protocol of `untwine evaluate --metrics all` at the reference's sample counts (spec §5.15) on the mean
and the sampled representation of one run, one metric at a time, so that the breakdown says where the time goes.
CPU seconds include joblib's worker processes (read from /proc). Also times DCI with the explicitly named fast
estimator (importance="lightgbm") on the same codes protocol, for the faithful/fast ratio. Results are written
after every metric, so an interrupted benchmark keeps what it measured.

The suite encodes through the code cache (issue 11: every stored image encoded once per model, shared by all
protocols and both representations) when `evaluate_model` would build one for the whole suite (`--cache auto`),
always (`on`) or never (`off`, the per-sample path). `--compare` runs every protocol both ways, fast path (cache)
then current path (per-sample encoding), and prints their numbers and CPU seconds side by side; the cache's build
time is reported once, and the encoding share of each path is estimated from it (CPU-s per encoded image x the
images each protocol encodes).

    python benchmarks/metrics_suite.py [--run runs/demo] [--metrics all] [--representations mean,sampled]
                                       [--compare] [--cache auto|on|off]
                                       [--num-points N  (a quick look; not the reference counts)]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from common import machine, save, tree_cpu_seconds

from untwine.errors import UntwineError
from untwine.evaluation.code_cache import planned_encodings
from untwine.evaluation.evaluate import code_cache_for, evaluate_model, metric_names, scaled_options
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
CACHE_CHOICES = {"auto": None, "on": True, "off": False}


def measure(model, dataset, rep: str, metric: str, options: dict, code_cache) -> dict:
    """One protocol on one representation: its values, wall and CPU seconds."""
    wall, cpu, load = time.perf_counter(), tree_cpu_seconds(), os.getloadavg()[0]
    try:
        values = evaluate_model(model, dataset, [metric], [rep], options={metric: options}, code_cache=code_cache)
        error = None
    except UntwineError as exc:  # e.g. a sample too small for the protocol: recorded, and the suite goes on
        values, error = {}, str(exc)
    wall, cpu = time.perf_counter() - wall, tree_cpu_seconds() - cpu
    prefix = f"eval.{rep}.{metric}."
    values = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix) and not k.endswith("elapsed_s")}
    return {"wall_s": wall, "cpu_s": cpu, "load_1min_at_start": load, "values": values, "error": error}


def headline(values: dict) -> dict:
    return {k: v for k, v in values.items() if k in HEADLINES}


def largest_difference(a: dict, b: dict) -> float:
    shared = [k for k in a if k in b]
    return max((abs(float(a[k]) - float(b[k])) for k in shared), default=float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/demo", help="a trained run directory (e.g. from `untwine demo`)")
    parser.add_argument("--metrics", default="all")
    parser.add_argument("--extras", default=",".join(EXTRAS), help="extra timings: dci_lightgbm, or ''")
    parser.add_argument("--representations", default="mean,sampled")
    parser.add_argument("--num-points", type=int, default=None)
    parser.add_argument("--compare", action="store_true", help="each protocol with the code cache and without")
    parser.add_argument("--cache", choices=tuple(CACHE_CHOICES), default="auto", help="without --compare")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default=None, help="results file name (default metrics_suite_<device>...)")
    args = parser.parse_args()
    run = RunDir(args.run)
    if not run.checkpoints.final.exists():
        raise SystemExit(f"{args.run} holds no trained model: run `untwine demo` first, or pass --run")
    model = run.load_model("final", device=args.device)
    dataset = run.load_dataset(device=args.device)
    reps = args.representations.split(",")
    jobs = [(name, name, {}) for name in metric_names(args.metrics)]
    jobs += [(extra, *EXTRAS[extra]) for extra in args.extras.split(",") if extra]
    if args.num_points:
        jobs = [(label, metric, {**scaled_options(metric, args.num_points), **opts}) for label, metric, opts in jobs]
    suite = {metric: opts for label, metric, opts in jobs if label not in EXTRAS}
    payload = {
        "machine": machine(),
        "run": str(run.path),
        "dataset": run.config().dataset,
        "num_points": args.num_points or "reference",
        "compare": args.compare,
        "cache": "on" if args.compare else args.cache,
        "timings": [],
    }
    name = args.name or "_".join(
        ["metrics_suite", args.device, *(["compare"] if args.compare else []), f"n{args.num_points or 'ref'}"]
    )

    wall, cpu = time.perf_counter(), tree_cpu_seconds()
    cache = code_cache_for(
        model, dataset, list(suite), reps, suite, True if args.compare else CACHE_CHOICES[args.cache]
    )
    build = {"wall_s": time.perf_counter() - wall, "cpu_s": tree_cpu_seconds() - cpu}
    if cache is not None:
        build.update(images=int(cache.mean.shape[0]), megabytes=cache.nbytes / 1e6)
        build["cpu_s_per_image"] = build["cpu_s"] / build["images"]
        print(
            f"code cache: {build['images']} images, {build['megabytes']:.0f} MB, {build['wall_s']:.1f} s wall, "
            f"{build['cpu_s']:.1f} CPU-s",
            flush=True,
        )
    else:
        print("code cache: not built (per-sample encoding)", flush=True)
    payload["code_cache"] = build if cache is not None else None

    paths = {"fast": cache, "current": False} if args.compare else {args.cache: cache if cache is not None else False}
    for rep in reps:
        for label, metric, options in jobs:
            row = {
                "representation": rep,
                "metric": label,
                "encoded_images": planned_encodings(metric, dataset, options),
            }
            for path_name, code_cache in paths.items():
                row[path_name] = measure(model, dataset, rep, metric, options, code_cache)
            payload["timings"].append(row)
            save(name, dict(payload))
            if args.compare:
                fast, current = row["fast"], row["current"]
                shown = ", ".join(
                    f"{k} {fast['values'][k]:.4f} | {current['values'].get(k, float('nan')):.4f}"
                    for k in headline(fast["values"])
                )
                diff = largest_difference(fast["values"], current["values"])
                errors = {e for e in (fast["error"], current["error"]) if e}
                shown += f"   error: {' | '.join(errors)}" if errors else ""
                print(
                    f"{rep:8s} {label:32s} fast {fast['cpu_s']:8.1f} CPU-s  current {current['cpu_s']:8.1f} CPU-s   "
                    f"{shown}   (largest difference of any value: {diff:.2g})",
                    flush=True,
                )
            else:
                (only,) = [row[p] for p in paths]
                shown = ", ".join(f"{k} {v:.4f}" for k, v in headline(only["values"]).items()) or only["error"]
                print(
                    f"{rep:8s} {label:32s} {only['wall_s']:8.1f} s wall {only['cpu_s']:8.1f} CPU-s   {shown}",
                    flush=True,
                )

    rows = [r for r in payload["timings"] if r["metric"] not in EXTRAS]
    summary = {}
    for path_name in paths:
        cpu = sum(r[path_name]["cpu_s"] for r in rows)
        wall = sum(r[path_name]["wall_s"] for r in rows)
        uses_cache = paths[path_name] is not False and paths[path_name] is not None
        if uses_cache:
            cpu, wall = cpu + build["cpu_s"], wall + build["wall_s"]
        encoding = None
        if cache is not None:  # CPU-s per image from the cache build
            encoding = (
                build["cpu_s"] if uses_cache else sum(r["encoded_images"] for r in rows) * build["cpu_s_per_image"]
            )
        summary[path_name] = {"cpu_s": cpu, "wall_s": wall, "encoding_cpu_s": encoding}
        share = f", encoding ~{encoding:.0f} CPU-s ({100 * encoding / cpu:.0f}%)" if encoding is not None else ""
        built = " (code cache build included)" if uses_cache else ""
        print(f"{path_name}: suite ({', '.join(reps)}) {wall:.0f} s wall, {cpu:.0f} CPU-s{share}{built}")
    if args.compare:
        worst = np.nanmax([largest_difference(r["fast"]["values"], r["current"]["values"]) for r in rows])
        summary["largest_difference"] = float(np.nan_to_num(worst, nan=0.0))
        ratio = summary["current"]["cpu_s"] / summary["fast"]["cpu_s"]
        print(f"current / fast = {ratio:.2f}x CPU-s; largest difference of any value: {worst:.2g}")
    if cache is not None:  # what encoding costs at the reference's sample counts, from the measured CPU-s per image
        reference = len(reps) * sum(planned_encodings(metric, dataset) for metric in suite)
        summary["reference_counts"] = {
            "images_encoded_per_sample": reference,
            "encoding_cpu_s_per_sample": reference * build["cpu_s_per_image"],
            "images_encoded_with_cache": build["images"],
            "encoding_cpu_s_with_cache": build["cpu_s"],
        }
        print(
            f"at the reference counts ({', '.join(reps)}): per-sample encoding {reference:,} images "
            f"~{reference * build['cpu_s_per_image']:.0f} CPU-s; the code cache {build['images']:,} images "
            f"{build['cpu_s']:.0f} CPU-s"
        )
    payload["summary"] = summary
    print(f"written to {save(name, dict(payload))}")


if __name__ == "__main__":
    main()
