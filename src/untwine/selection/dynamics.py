"""The training-dynamics score (Holtz, Mishne & Cloninger 2022, §3), built on M-PHATE's multislice kernel.

A trace [T, n, F] holds a run's decoder activations (F hidden units) on n fixed trace samples at T training steps
(training/trace.py). Per realisation (seed) r of a specification:
1. `normalize_trace`: z-score each (step, sample) row over its F features (m_phate.utils.normalize; std 0 -> 1).
2. `multislice_kernel` -- m_phate.kernel.multislice_kernel exactly (spec model-selection-methods.md §3.3), over the
   N = T n nodes (step tau, sample i), node index tau * n + i:
   - one joint PCA to `n_pca` = 100 dimensions over all T n rows if F > 100 and T n > 100 (graphtools' Data);
   - intraslice (tau = nu): graphtools' kNN alpha-decay kernel, K(i, j) = exp(-(d_ij / sigma_i)^decay) with
     sigma_i the distance to the `intraslice_knn` = 2nd nearest other sample (k capped at n - 2, floored at machine
     epsilon), decay 5, affinities below `thresh` = 1e-4 set to 0, then (K + K^T) / 2 (diagonal 1);
   - interslice (i = j, tau != nu): exp(-||x_i^tau - x_i^nu||^2 / eps^2), one global eps = the mean over samples of
     the median over steps of the distance to the `interslice_knn`-th nearest other step (floored at machine
     epsilon); the interslice diagonal is zeroed;
3. `diffusion_operator`: P = D^-1 K after graphtools' `Graph(K, precomputed="affinity")` drops entries below 1e-4.
4. Diffusion time t: PHATE's automatic choice (`optimal_t`: the knee of the von Neumann entropy of P^t over t =
   1..100, with PHATE's own indexing) per realisation, then one shared t, the median over realisations, so that
   every realisation is diffused equally [PROPOSAL, spec §3.4]. An integer t may be given instead.
5. `joint_embedding` (paper §3.1): the rows of the realisations' diffusion kernels P_r^t are stacked into one tall
   matrix [R N, N] and its `n_components` leading left singular vectors are taken; realisation r's N nodes are the
   rows r N .. (r + 1) N - 1 (paper: "concatenating the rows of diffusion kernels ... left singular vectors of this
   tall matrix"; spec §3.4's wide variant is its transpose's). n_components = 10 is a [PROPOSAL] (spec §3.4).
6. `mmd2`: the unbiased MMD^2 (Gretton et al. 2012) between two realisations' embedded nodes, Gaussian kernel
   exp(-d^2 / (2 h^2)) with h the median pairwise distance of the pooled points [PROPOSAL, spec §3.4].
7. The score of the specification = the mean MMD^2 over pairs of realisations (paper §3.3 step 4); lower = more
   stable dynamics = better. Each realisation's score = its mean MMD^2 to the others.

Differences from M-PHATE, each deliberate: the PCA is exact (graphtools' randomized PCA approximates it, unseeded,
so M-PHATE's kernel varies from call to call when F > 100 -- by ~1e-2 on flat spectra); M-PHATE raises if
`interslice_knn` >= T, here k is capped at T - 1; no landmarks (M-PHATE's embedding uses 4,000 landmarks above
4,000 nodes; the score needs the full operator). The operators are dense N x N: keep N = T n to a few thousand on
a CPU (2,100 nodes: 35 MB per operator; the diffusion time's SVD and the matrix powers cost O(N^3) each).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from scipy import linalg, sparse
from scipy.spatial.distance import cdist, pdist, squareform

from untwine.errors import InvalidInputError

EPS = np.finfo(float).eps
DEFAULTS = {
    "intraslice_knn": 2,
    "interslice_knn": 25,
    "decay": 5.0,
    "thresh": 1e-4,
    "n_pca": 100,
    "n_components": 10,
    "t_max": 100,
    "max_points": 2000,
}


def normalize_trace(trace) -> np.ndarray:
    """z-score each (step, sample) row of a trace [T, n, F] over its features; a constant row becomes 0."""
    trace = np.asarray(trace, dtype=np.float64)
    centred = trace - trace.mean(axis=2, keepdims=True)
    std = centred.std(axis=2, keepdims=True)
    return centred / np.where(std > 0, std, 1.0)


def reduce_trace(trace: np.ndarray, n_pca: int | None = 100) -> np.ndarray:
    """One exact PCA over all T n rows to n_pca dimensions (the leading eigenvectors of the F x F scatter matrix),
    when F > n_pca and T n > n_pca; else the trace as is. Signs are arbitrary: distances do not depend on them."""
    steps, samples, features = trace.shape
    if n_pca is None or n_pca >= features or n_pca >= steps * samples:
        return trace
    rows = trace.reshape(steps * samples, features)
    centred = rows - rows.mean(axis=0)
    _, axes = linalg.eigh(centred.T @ centred, subset_by_index=[features - n_pca, features - 1])
    return (centred @ axes[:, ::-1]).reshape(steps, samples, n_pca)


def intraslice_kernel(points: np.ndarray, knn: int = 2, decay: float = 5.0, thresh: float = 1e-4) -> np.ndarray:
    """graphtools' kNN alpha-decay kernel on one slice [n, F]: symmetric [n, n] with ones on the diagonal."""
    n = points.shape[0]
    k = min(knn, n - 2)
    if k < 1:
        raise InvalidInputError(f"the intraslice kernel needs at least 3 trace samples, got {n}")
    distances = squareform(pdist(points))
    bandwidth = np.maximum(np.partition(distances, k, axis=1)[:, k], EPS)  # k-th nearest other (self is at 0)
    with np.errstate(invalid="ignore"):
        affinity = np.exp(-np.power(distances / bandwidth[:, None], decay))
    affinity = np.where(np.isnan(affinity), 1.0, affinity)
    affinity[affinity < thresh] = 0.0
    return (affinity + affinity.T) / 2


def interslice_kernels(trace: np.ndarray, knn: int = 25) -> tuple[np.ndarray, float]:
    """(kernels [n, T, T], eps): each sample's fixed-bandwidth Gaussian kernel across steps, one global eps."""
    steps = trace.shape[0]
    if steps < 2:
        raise InvalidInputError(f"the training-dynamics kernel needs at least 2 trace steps, got {steps}")
    k = min(knn, steps - 1)  # M-PHATE raises when interslice_knn >= T
    distances = np.stack([squareform(pdist(trace[:, i, :])) for i in range(trace.shape[1])])
    per_sample = np.maximum(np.median(np.partition(distances, k, axis=2)[:, :, k], axis=1), EPS)
    eps = float(np.mean(per_sample))
    kernels = np.exp(-((distances / eps) ** 2))
    return (kernels + kernels.transpose(0, 2, 1)) / 2, eps


def multislice_kernel(
    trace,
    intraslice_knn: int = 2,
    interslice_knn: int = 25,
    decay: float = 5.0,
    thresh: float = 1e-4,
    n_pca: int | None = 100,
) -> sparse.csr_matrix:
    """M-PHATE's multislice kernel of a (normalised) trace [T, n, F]: sparse [T n, T n], node tau * n + i."""
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 3:
        raise InvalidInputError(f"a trace has shape [steps, samples, features], got {list(trace.shape)}")
    trace = reduce_trace(trace, n_pca)
    steps, samples, _ = trace.shape
    blocks = [intraslice_kernel(trace[tau], intraslice_knn, decay, thresh) for tau in range(steps)]
    kernel = sparse.block_diag(blocks, format="csr")
    across, _ = interslice_kernels(trace, interslice_knn)
    tau, nu = np.nonzero(~np.eye(steps, dtype=bool))
    rows = (tau[None, :] * samples + np.arange(samples)[:, None]).ravel()
    cols = (nu[None, :] * samples + np.arange(samples)[:, None]).ravel()
    values = across[:, tau, nu].ravel()
    size = steps * samples
    return (kernel + sparse.csr_matrix((values, (rows, cols)), shape=(size, size))).tocsr()


def diffusion_operator(kernel, thresh: float = 1e-4) -> sparse.csr_matrix:
    """Row-stochastic P = D^-1 K of graphtools' Graph(K, precomputed="affinity"): entries below `thresh` dropped,
    (K + K^T) / 2, rows normalised to sum 1."""
    kernel = sparse.csr_matrix(kernel, dtype=np.float64, copy=True)
    kernel.data[kernel.data < thresh] = 0.0
    kernel.eliminate_zeros()
    kernel = ((kernel + kernel.T) / 2).tocsr()
    degree = np.asarray(kernel.sum(axis=1)).ravel()
    return (sparse.diags(1.0 / degree) @ kernel).tocsr()


def knee_point(y: np.ndarray, x: np.ndarray | None = None) -> float:
    """The x of the knee of y = f(x) (PHATE's `find_knee_point`): the breakpoint b (1 <= b <= len - 2) minimising
    the summed absolute residuals of a least-squares line through points 0..b (residuals on 0..b) and one through
    points b - 1..end (PHATE's indexing: one point more than the residuals on b..end it is judged by)."""
    y = np.asarray(y, dtype=np.float64)
    x = np.arange(len(y), dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    if len(y) < 3:
        raise InvalidInputError("a knee needs at least 3 points")
    errors = []
    for b in range(1, len(y) - 1):
        left = np.polyval(np.polyfit(x[: b + 1], y[: b + 1], 1), x[: b + 1]) - y[: b + 1]
        right = np.polyval(np.polyfit(x[b - 1 :], y[b - 1 :], 1), x[b:]) - y[b:]
        errors.append(np.abs(left).sum() + np.abs(right).sum())
    return x[1 + int(np.argmin(errors))]


def von_neumann_entropy(operator, t_max: int = 100) -> np.ndarray:
    """Entropy of the normalised singular values of P^t for t = 1..t_max (PHATE's `compute_von_neumann_entropy`)."""
    dense = operator.toarray() if sparse.issparse(operator) else np.asarray(operator)
    values = linalg.svd(dense, compute_uv=False)
    entropy, powered = [], values.copy()
    for _ in range(t_max):
        prob = powered / powered.sum() + EPS
        entropy.append(-np.sum(prob * np.log(prob)))
        powered = powered * values
    return np.array(entropy)


def optimal_t(operator, t_max: int = 100) -> int:
    """PHATE's automatic diffusion time: the knee of the entropy curve, at x = 0..t_max - 1 (PHATE's indexing,
    which names the entropy of P^(x + 1) by x)."""
    return max(int(knee_point(von_neumann_entropy(operator, t_max), np.arange(t_max))), 1)


def diffuse(operator, t: int) -> np.ndarray:
    """The dense diffusion kernel P^t."""
    dense = operator.toarray() if sparse.issparse(operator) else np.asarray(operator, dtype=np.float64)
    return np.linalg.matrix_power(dense, t)


def joint_embedding(
    kernels: Sequence[np.ndarray], n_components: int = 10, gram: np.ndarray | None = None
) -> list[np.ndarray]:
    """Left singular vectors of the tall matrix [P_1^t; ...; P_R^t] (R N x N), split per realisation: R arrays
    [N, n_components]. Computed from the eigenvectors of sum_r (P_r^t)^T P_r^t (`gram`, if already known); the signs
    are arbitrary (shared by all realisations, so distances between their embeddings do not depend on them)."""
    size = kernels[0].shape[0]
    if any(k.shape != (size, size) for k in kernels):
        raise InvalidInputError("the realisations' diffusion kernels must all be N x N over the same trace nodes")
    if not 1 <= n_components <= size:
        raise InvalidInputError(f"n_components must be between 1 and {size}, got {n_components}")
    gram = sum(k.T @ k for k in kernels) if gram is None else gram
    values, vectors = linalg.eigh(gram, subset_by_index=[size - n_components, size - 1])
    order = np.argsort(values)[::-1]
    singular = np.sqrt(np.maximum(values[order], 0.0))
    vectors = vectors[:, order]
    return [k @ vectors / np.where(singular > 0, singular, 1.0) for k in kernels]


def median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """The median heuristic: the median distance between distinct points of the pooled sample."""
    distances = pdist(np.concatenate([x, y]))
    return float(max(np.median(distances), EPS))


def mmd2(x, y, bandwidth: float | None = None, unbiased: bool = True) -> float:
    """MMD^2 between samples x [m, d] and y [n, d], Gaussian kernel exp(-||a - b||^2 / (2 h^2)), h by default the
    median heuristic. Unbiased: the within-sample sums leave out i = j (Gretton et al. 2012, eq. 3)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise InvalidInputError(f"mmd2 needs two samples [m, d] and [n, d] with m, n >= 2; got {x.shape}, {y.shape}")
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    kxx = np.exp(-cdist(x, x, "sqeuclidean") / (2 * h * h))
    kyy = np.exp(-cdist(y, y, "sqeuclidean") / (2 * h * h))
    kxy = np.exp(-cdist(x, y, "sqeuclidean") / (2 * h * h))
    m, n = len(x), len(y)
    if unbiased:
        within = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    else:
        within = kxx.mean() + kyy.mean()
    return float(within - 2 * kxy.mean())


def _embedded_pairwise(
    kernels: Sequence[np.ndarray], grams: Sequence[np.ndarray], n_components: int, max_points: int, seed: int
) -> np.ndarray:
    """Pairwise MMD^2 [R, R] between R realisations' joint embeddings (`joint_embedding`, from the realisations'
    diffusion kernels P_r^t and their Gram matrices (P_r^t)^T P_r^t), on at most `max_points` nodes (the same for
    every realisation, drawn with `seed`)."""
    embeddings = joint_embedding(kernels, n_components, gram=sum(grams))
    size = embeddings[0].shape[0]
    if size > max_points:  # the same nodes for every realisation
        keep = np.sort(np.random.default_rng(seed).choice(size, max_points, replace=False))
        embeddings = [e[keep] for e in embeddings]
    count = len(embeddings)
    pairwise = np.zeros((count, count))
    for r in range(count):
        for q in range(r + 1, count):
            pairwise[r, q] = pairwise[q, r] = mmd2(embeddings[r], embeddings[q])
    return pairwise


def dynamics_score(
    traces: Sequence,
    t: int | str = "auto",
    n_components: int = 10,
    intraslice_knn: int = 2,
    interslice_knn: int = 25,
    decay: float = 5.0,
    thresh: float = 1e-4,
    n_pca: int | None = 100,
    t_max: int = 100,
    max_points: int = 2000,
    seed: int = 0,
    subsets: Sequence[Sequence[int]] | None = None,
) -> dict:
    """The score of one specification from its R realisations' traces [T, n, F_r] (same steps and samples; F may
    differ). Returns {"score", "pairwise_mmd" [R, R], "realisation_scores" [R], "t", "t_per_realisation",
    "timings" (seconds per phase)}.

    `subsets` (index tuples of at least 2 realisations, e.g. `selection.seeds.seed_subsets`) adds
    "subset_scores": the score of the specification from each subset's realisations alone -- equal to
    `dynamics_score([traces[i] for i in subset])["score"]` (its own shared t, the median of its realisations' t;
    its own joint embedding), with each realisation's operator, t and diffusion kernel computed once."""
    if len(traces) < 2:
        raise InvalidInputError(
            f"the training-dynamics score compares realisations: it needs at least 2, got {len(traces)}"
        )
    shapes = {np.shape(trace)[:2] for trace in traces}
    if len(shapes) > 1 or any(np.ndim(trace) != 3 for trace in traces):
        raise InvalidInputError(f"the traces must share their steps and samples; got shapes {sorted(shapes)}")
    subsets = [tuple(int(i) for i in s) for s in subsets or ()]
    bad = [s for s in subsets if len(s) < 2 or len(set(s)) != len(s) or not all(0 <= i < len(traces) for i in s)]
    if bad:
        raise InvalidInputError(f"a subset lists at least 2 distinct realisations out of {len(traces)}; got {bad[0]}")
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    operators = [
        diffusion_operator(
            multislice_kernel(normalize_trace(trace), intraslice_knn, interslice_knn, decay, thresh, n_pca), thresh
        )
        for trace in traces
    ]
    timings = {"kernel_s": lap()}
    per_realisation = [optimal_t(p, t_max) for p in operators] if t == "auto" else []
    timings["diffusion_time_s"] = lap()

    def shared_t(members: Sequence[int]) -> int:
        chosen = int(round(float(np.median([per_realisation[i] for i in members])))) if t == "auto" else int(t)
        if chosen < 1:
            raise InvalidInputError(f"the diffusion time t must be a positive integer, got {t}")
        return chosen

    cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def diffused(members: Sequence[int], steps: int) -> tuple[list, list]:
        for i in members:
            if (i, steps) not in cache:
                kernel = diffuse(operators[i], steps)
                cache[i, steps] = kernel, kernel.T @ kernel
        return [cache[i, steps][0] for i in members], [cache[i, steps][1] for i in members]

    everyone = list(range(len(traces)))
    shared = shared_t(everyone)
    kernels, grams = diffused(everyone, shared)
    timings["diffusion_s"] = lap()
    pairwise = _embedded_pairwise(kernels, grams, n_components, max_points, seed)
    timings["embedding_mmd_s"] = lap()
    count = len(traces)
    result = {
        "score": float(pairwise[np.triu_indices(count, 1)].mean()),
        "pairwise_mmd": pairwise,
        "realisation_scores": pairwise.sum(axis=1) / (count - 1),
        "t": shared,
        "t_per_realisation": per_realisation,
        "timings": timings,
    }
    if subsets:
        scores = []
        for members in subsets:
            if sorted(members) == everyone:
                scores.append(result["score"])
                continue
            within = _embedded_pairwise(*diffused(members, shared_t(members)), n_components, max_points, seed)
            scores.append(float(within[np.triu_indices(len(members), 1)].mean()))
        result["subset_scores"] = scores
        timings["subsets_s"] = lap()
    return result


def dynamics_for_runs(
    run_dirs: Sequence,
    group: str | None = None,
    store: bool = True,
    max_subsets: int = 10,
    subset_sizes: Sequence[int] | None = None,
    **options,
) -> dict:
    """The training-dynamics score of a specification from its runs' traces (`untwine train --trace-every N`).

    The runs must have traced the same observations at the same steps; `group` names them in errors. With `store`,
    merges `dynamics.score` (the specification's), `dynamics.realisation_score`, `dynamics.num_realisations` and
    `dynamics.t` into each run's results.json. Options: those of `dynamics_score`.

    Unless `max_subsets` is 0, the score is also recomputed from subsets of the runs' seeds (Holtz et al. Table 1
    "as the number of seeds grows"; `selection.seeds.all_subsets`: up to `max_subsets` draws of each size of
    `subset_sizes`), stored as `dynamics.subsets` = [{"seeds": [...], "score": ...}, ...] (sizes ascending, the
    full set last; [] without subsets) and returned as result["subsets"]. Their cost is stored apart from the
    score's (result["elapsed_s"]) as `dynamics.subsets_elapsed_s` (per run). Runs with repeated seeds get none."""
    from safetensors.torch import load_file

    from untwine.runs import RunDir
    from untwine.selection.seeds import all_subsets
    from untwine.training.trace import SAMPLES_FILE, TRACE_DIR, has_trace, read_trace

    start = time.perf_counter()
    label = f" ({group})" if group else ""
    runs = [RunDir(r).require() for r in run_dirs]
    if len(runs) < 2:
        raise InvalidInputError(
            f"the training-dynamics score compares the runs of a specification: it needs at least 2{label}, "
            f"got {len(runs)}"
        )
    missing = [run.name for run in runs if not has_trace(run.path)]
    if missing:
        raise InvalidInputError(f"no training trace in {', '.join(missing)}{label}: train them with --trace-every N")
    loaded = [read_trace(run.path) for run in runs]
    steps = [tuple(s.tolist()) for s, _ in loaded]
    if len(set(steps)) > 1:
        listing = ", ".join(f"{run.name}: {len(s)} steps up to {s[-1]}" for run, s in zip(runs, steps))
        raise InvalidInputError(f"the runs{label} were traced at different steps ({listing})")
    factors = [load_file(run.path / TRACE_DIR / SAMPLES_FILE)["factors"] for run in runs]
    if any(f.shape != factors[0].shape or not bool((f == factors[0]).all()) for f in factors[1:]):
        raise InvalidInputError(f"the runs{label} traced different observations (data set or trace_samples differ)")
    seeds = [run.config().seed for run in runs]
    order = sorted(range(len(runs)), key=lambda i: seeds[i])  # positions in the seeds sorted ascending -> runs
    subsets = []
    if max_subsets > 0 and len(set(seeds)) == len(seeds):
        subsets = [tuple(order[p] for p in positions) for _, _, positions in
                   all_subsets(len(runs), max_subsets, subset_sizes)]  # fmt: skip
    result = dynamics_score([trace for _, trace in loaded], subsets=subsets, **options)
    result["runs"] = [run.name for run in runs]
    subsets_s = result["timings"].get("subsets_s", 0.0)
    result["elapsed_s"] = time.perf_counter() - start - subsets_s
    result["subsets"] = [
        {"seeds": sorted(seeds[i] for i in members), "score": score}
        for members, score in zip(subsets, result.get("subset_scores", []))
    ]
    if store:
        for run, own in zip(runs, result["realisation_scores"]):
            values = {
                "dynamics.score": result["score"],
                "dynamics.realisation_score": float(own),
                "dynamics.num_realisations": len(runs),
                "dynamics.t": result["t"],
                "dynamics.subsets": result["subsets"],  # [] (not left stale) when none were asked for
                "dynamics.subsets_elapsed_s": subsets_s / len(runs),
            }
            run.update_results(values)
    return result
