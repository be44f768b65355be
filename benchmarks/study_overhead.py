"""What the study machinery costs: the same models trained and evaluated directly (Trainer + evaluate_run, one after
another in this process) and as a study (`run_study`: Ray Tune trials, results stored in SQLite); Ray's start-up;
the ResultStore's write and read speed.

Both paths train each model with 1 thread and run one model at a time (the study on a local Ray of 1 CPU), so the
difference is the machinery: Ray's start-up once, and per model a trial (an actor process, importing torch and
untwine, loading the data set), the report to the driver and the store's transaction. Two estimates of the
machinery's cost per model: (a) within the study run, its wall time minus Ray's start-up minus the training and
evaluation seconds untwine itself measured in the trials (robust on a busy machine: one run); (b) the study's wall
time minus the direct path's, per model (both runs; noisy when the machine's load changes between them). Reported
as seconds and as a fraction of a model's cost; `--steps` sets the model's length (the target is < 5 % for models
of a minute or more).

    python benchmarks/study_overhead.py [--models 4] [--steps 200] [--architecture conv] [--metrics mig]
        [--num-points 1000] [--ray-starts 3] [--store-models 2000] [--store-keys 300]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import machine, save, tree_cpu_seconds

from untwine.evaluation import evaluate_run
from untwine.study.definition import preset_study
from untwine.study.runner import ray_session, run_study
from untwine.study.store import ResultStore
from untwine.training import Trainer


def direct(definition, root: Path) -> float:
    """Train and evaluate every model of the definition in this process, one after another (1 thread)."""
    evaluation = definition.evaluation
    start = time.perf_counter()
    for spec in definition.models:
        run = root / spec.run_dir
        Trainer(spec.config, run).train()
        for rep, names in evaluation["per_representation"].items():
            options = {m: evaluation["options"][m] for m in names if m in evaluation["options"]}
            evaluate_run(run, names, [rep], options=options)
    return time.perf_counter() - start


def ray_start(temp: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with ray_session(None, 1, temp, temp / "ray.log"):
            times.append(time.perf_counter() - start)
    return times


def store_speed(root: Path, models: int, keys: int) -> dict:
    """Rows per second of `finish` (one transaction per model) and seconds of `frame()`."""
    store = ResultStore.create(root / "bench.sqlite", {}, "fp")
    rows = [
        {"model_id": str(i), "method": "beta_vae", "dataset": "dsprites", "seed": i, "seed_group": "g", "config": "{}"}
        for i in range(models)
    ]
    store.register(rows)
    results = {f"eval.mean.metric_{k // 10}.key_{k % 10}": float(k) for k in range(keys)}
    start = time.perf_counter()
    for i in range(models):
        store.finish(str(i), results)
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    frame = store.frame()
    frame_s = time.perf_counter() - start
    store.close()
    assert frame.shape[0] == models
    return {
        "models": models,
        "keys_per_model": keys,
        "finish_s": write_s,
        "models_per_s": models / write_s,
        "rows_per_s": models * keys / write_s,
        "frame_s": frame_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=4, help="models of cpu_study's beta-VAE sweep on dSprites")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--architecture", default="conv")
    parser.add_argument("--metrics", default="mig")
    parser.add_argument("--num-points", type=int, default=1000)
    parser.add_argument("--ray-starts", type=int, default=3)
    parser.add_argument("--store-models", type=int, default=2000)
    parser.add_argument("--store-keys", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    payload = {"machine": machine(), "args": vars(args)}
    seeds = list(range(args.models))
    definition = preset_study(
        "cpu_study",
        datasets=["dsprites"],
        methods=["beta_vae"],
        value_indices=[0],
        seeds=seeds if args.models <= 5 else None,
        steps=args.steps,
        settings={"architecture": args.architecture},
        metrics=args.metrics,
        sampled_metrics=args.metrics,
        num_points=args.num_points,
    )
    root = Path(tempfile.mkdtemp(prefix="study-overhead-"))
    temp = Path(tempfile.mkdtemp(prefix="ur-", dir="/tmp"))
    try:
        cpu = tree_cpu_seconds()
        direct_s = direct(definition, root / "direct")
        payload["direct"] = {
            "wall_s": direct_s,
            "cpu_s": tree_cpu_seconds() - cpu,
            "per_model_s": direct_s / args.models,
        }
        print(
            f"direct: {args.models} models in {direct_s:.1f} s ({direct_s / args.models:.1f} s per model)", flush=True
        )
        summary = run_study(definition, root / "study", num_cpus=1, cpus_per_trial=1, temp_dir=temp)
        with ResultStore(root / "study" / "study.sqlite") as store:
            models = sorted(store.models("done"), key=lambda m: m["started_at"])
        inside = sum(m["train_s"] + m["eval_s"] for m in models)
        # per trial: driver saw it start .. driver stored it, minus what the trial measured itself
        in_trial = [m["finished_at"] - m["started_at"] - m["train_s"] - m["eval_s"] for m in models]
        gaps = [b["started_at"] - a["finished_at"] for a, b in zip(models, models[1:])]
        payload["trials"] = {"in_trial_overhead_s": in_trial, "gaps_between_trials_s": gaps}
        print(
            f"per trial, besides training and evaluation: median {statistics.median(in_trial):.1f} s (building the "
            f"model and loading the data set included); between trials: median "
            f"{statistics.median(gaps) if gaps else float('nan'):.1f} s",
            flush=True,
        )
        within = (summary.wall_s - summary.ray_start_s - inside) / args.models
        between = (summary.wall_s - summary.ray_start_s - direct_s) / args.models
        per_model = inside / args.models
        payload["study"] = {
            "wall_s": summary.wall_s,
            "ray_start_s": summary.ray_start_s,
            "train_and_eval_in_trials_s": inside,
            "per_model_overhead_s_within_run": within,
            "per_model_overhead_s_vs_direct": between,
            "overhead_fraction_of_a_model": within / per_model,
        }
        print(
            f"study: {summary.wall_s:.1f} s, of which Ray start-up {summary.ray_start_s:.1f} s and training + "
            f"evaluation in the trials {inside:.1f} s; machinery per model {within:.1f} s = {within / per_model:.1%} "
            f"of a model's {per_model:.1f} s (vs the direct run: {between:.1f} s); for a 60 s model {within / 60:.1%}",
            flush=True,
        )
        starts = ray_start(temp, args.ray_starts)
        payload["ray_start_s"] = {"median": statistics.median(starts), "all": starts}
        print(f"Ray start-up (local, 1 CPU): median {statistics.median(starts):.1f} s of {starts}", flush=True)
        payload["store"] = store_speed(root, args.store_models, args.store_keys)
        s = payload["store"]
        print(
            f"store: {s['models']} models x {s['keys_per_model']} keys stored in {s['finish_s']:.1f} s "
            f"({s['models_per_s']:.0f} models/s, {s['rows_per_s']:,.0f} rows/s, one transaction each); "
            f"frame() {s['frame_s']:.2f} s",
            flush=True,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(temp, ignore_errors=True)
    print(save("study_overhead", payload))


if __name__ == "__main__":
    main()
