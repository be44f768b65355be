"""The GBT metrics with scikit-learn's GradientBoostingClassifier vs untwine's exact re-implementation, and the
downstream logistic regression with and without one BLAS thread per fit.

dSprites-like codes (10 latents for the factors shape 3, scale 6, orientation 40, x 32, y 32: five aligned noisy
latents, two mixing pairs of factors, three noise latents), reference sample counts. Each part runs its two
variants alternately `--repeats` times in this process; CPU seconds count this process and its joblib workers
(benchmarks/common.py). Both variants' metric values are saved side by side. The first untwine call compiles the
numba kernels (or loads them from numba's cache): timed separately as `compile`.

    nice python benchmarks/gbt.py [--parts dci,downstream_boosted_trees,fairness,downstream_logistic_regression]
                                  [--repeats 3] [--num-train 10000] [--num-test 5000] [--n-jobs N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import numpy as np
from common import machine, save, tree_cpu_seconds

from untwine.metrics import downstream, gbt, predictors
from untwine.metrics.dci import dci

SIZES = (3, 6, 40, 32, 32)
PARTS = ("dci", "downstream_boosted_trees", "fairness", "downstream_logistic_regression")


def codes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(codes [n, 10], factors [n, 5]) with the structure of a partly disentangled dSprites model."""
    factors = np.stack([rng.integers(0, s, n) for s in SIZES], axis=1)
    scaled = factors / np.array(SIZES) - 0.5
    aligned = scaled + rng.normal(0, 0.05, scaled.shape)
    mixed = np.c_[scaled[:, 3] + scaled[:, 4], scaled[:, 1] - scaled[:, 2]] + rng.normal(0, 0.1, (n, 2))
    return np.c_[aligned, mixed, rng.normal(size=(n, 3))], factors


def run_dci(variant, data, n_jobs):
    return dci(*data["dci"], random_state=0, n_jobs=n_jobs, estimator=variant)


def run_downstream(predictor):
    def run(variant, data, n_jobs):
        scores = {}
        for size, split in data["downstream"].items():
            if predictor == "logistic_regression":
                blas = contextlib.nullcontext if variant == "before" else predictors.one_blas_thread
                with _patched_blas(blas):
                    train, test = downstream.factor_accuracies(*split, predictor, 0, n_jobs=n_jobs)
            else:
                train, test = downstream.factor_accuracies(*split, predictor, 0, n_jobs=n_jobs, estimator=variant)
            scores.update(downstream.downstream_scores(train, test, size))
        return scores

    return run


@contextlib.contextmanager
def _patched_blas(context):
    """`before`: the fits as they ran before one_blas_thread (BLAS threads left as they are)."""
    saved = predictors.one_blas_thread, downstream.one_blas_thread
    predictors.one_blas_thread = downstream.one_blas_thread = context
    try:
        yield
    finally:
        predictors.one_blas_thread, downstream.one_blas_thread = saved


def run_fairness(variant, data, n_jobs):
    """The fairness protocol's classifier work: 5 target GBTs on 10,000 codes, then predictions for 100 base
    points times every value of every other factor (encoding and data excluded)."""
    x, factors, probes = data["fairness"]
    models = predictors.fit_boosted_trees(x, list(factors.T), list(range(len(SIZES))), variant, n_jobs)
    counts = {}
    for i, model in enumerate(models):
        for j, probe in enumerate(probes):
            if i != j:
                counts[f"pred{i}:sens{j}"] = float(np.bincount(model.predict(probe), minlength=SIZES[i]).max())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=10_000)
    parser.add_argument("--num-test", type=int, default=5_000)
    parser.add_argument("--n-jobs", type=int, default=None, help="default: every core, as the metrics")
    parser.add_argument("--name", default="gbt", help="results file name")
    parser.add_argument("--only", default=None, help="run one variant (e.g. untwine): timings, no ratio")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = {
        "dci": (*codes(args.num_train, rng), *codes(args.num_test, rng)),
        "downstream": {
            n: (*codes(n, rng), *codes(args.num_test, rng)) for n in (10, 100, 1000, 10_000) if n <= args.num_train
        },
        "fairness": (*codes(args.num_train, rng), [codes(100 * s, rng)[0] for s in SIZES]),
    }
    parts = {
        "dci": (run_dci, ("sklearn", "untwine")),
        "downstream_boosted_trees": (run_downstream("boosted_trees"), ("sklearn", "untwine")),
        "fairness": (run_fairness, ("sklearn", "untwine")),
        "downstream_logistic_regression": (run_downstream("logistic_regression"), ("before", "after")),
    }
    wall, cpu = time.perf_counter(), tree_cpu_seconds()
    gbt.fit(np.random.default_rng(1).normal(size=(50, 2)), [np.arange(50) % 3], 0, n_stages=2)
    payload = {
        "machine": machine(),
        "num_train": args.num_train,
        "num_test": args.num_test,
        "n_jobs": args.n_jobs,
        "compile": {"wall_s": time.perf_counter() - wall, "cpu_s": tree_cpu_seconds() - cpu},
        "parts": {},
    }
    print(f"numba kernels ready: {payload['compile']['cpu_s']:.1f} CPU-s", flush=True)
    for part in args.parts.split(","):
        run, variants = parts[part]
        if args.only:
            variants = (args.only,)
        runs = {v: {"cpu_s": [], "wall_s": [], "load_1min": []} for v in variants}
        values = {}
        for _ in range(args.repeats):
            for variant in variants:
                load = os.getloadavg()[0]
                wall, cpu = time.perf_counter(), tree_cpu_seconds()
                values[variant] = run(variant, data, args.n_jobs)
                runs[variant]["wall_s"].append(time.perf_counter() - wall)
                runs[variant]["cpu_s"].append(tree_cpu_seconds() - cpu)
                runs[variant]["load_1min"].append(load)
                print(f"{part} {variant}: {runs[variant]['cpu_s'][-1]:.1f} CPU-s, load {load:.1f}", flush=True)
        for variant in variants:
            runs[variant]["cpu_s_median"] = statistics.median(runs[variant]["cpu_s"])
            runs[variant]["wall_s_median"] = statistics.median(runs[variant]["wall_s"])
        if args.only:
            payload["parts"][part] = {**runs, "values": values[args.only]}
            print(f"{part} {args.only}: {runs[args.only]['cpu_s_median']:.1f} CPU-s", flush=True)
            continue
        slow, fast = variants
        keys = sorted(values[slow])
        payload["parts"][part] = {
            **runs,
            "cpu_ratio": runs[slow]["cpu_s_median"] / runs[fast]["cpu_s_median"],
            "wall_ratio": runs[slow]["wall_s_median"] / runs[fast]["wall_s_median"],
            "values": {k: [values[slow][k], values[fast][k]] for k in keys},
            "max_abs_difference": max(abs(values[slow][k] - values[fast][k]) for k in keys),
        }
        print(
            f"{part}: {slow} {runs[slow]['cpu_s_median']:.1f} CPU-s, {fast} {runs[fast]['cpu_s_median']:.1f} CPU-s "
            f"({payload['parts'][part]['cpu_ratio']:.1f}x); max |difference| of the values "
            f"{payload['parts'][part]['max_abs_difference']:.3g}",
            flush=True,
        )
        save(args.name, dict(payload))
    print(save(args.name, payload))


if __name__ == "__main__":
    main()
