"""The training-dynamics score: the multislice kernel against a loop-based transcription of M-PHATE's formulas
(spec model-selection-methods.md §3.3) and, where the `m-phate` package is importable, against m-phate itself; the
diffusion time against PHATE's documented examples; the joint embedding against numpy's SVD; MMD against a
brute-force loop; the run-level score on traced runs."""

import math
import warnings

import numpy as np
import pytest

from untwine.config import TrainConfig
from untwine.errors import InvalidInputError
from untwine.runs import RunDir
from untwine.selection import dynamics as dyn
from untwine.training import Trainer

# --- an independent transcription of the kernel (spec §3.3, steps 1 and 3-6), one loop per sentence ------------------


def transcribed_multislice_kernel(trace, knn=2, interslice_knn=25, decay=5.0, thresh=1e-4):
    steps, samples, features = trace.shape
    normalised = np.zeros_like(trace)
    for tau in range(steps):  # "z-score each (epoch, point) feature vector across its F features"
        for i in range(samples):
            row = trace[tau, i] - trace[tau, i].mean()
            std = row.std()
            normalised[tau, i] = row / std if std > 0 else row
    size = steps * samples
    kernel = np.zeros((size, size))
    k = min(knn, samples - 2)
    for tau in range(steps):
        affinity = np.zeros((samples, samples))
        for i in range(samples):
            d = [np.linalg.norm(normalised[tau, i] - normalised[tau, j]) for j in range(samples)]
            sigma = sorted(d)[k]  # "distance to the k-th nearest neighbour excluding itself" (itself is sorted(d)[0])
            for j in range(samples):
                a = math.exp(-((d[j] / sigma) ** decay))
                affinity[i, j] = a if a >= thresh else 0.0  # "affinities below thresh are set to 0"
        for i in range(samples):
            for j in range(samples):
                kernel[tau * samples + i, tau * samples + j] = (affinity[i, j] + affinity[j, i]) / 2
    kk = min(interslice_knn, steps - 1)
    per_point, distance = [], {}
    for i in range(samples):
        rows = []
        for tau in range(steps):
            d = [np.linalg.norm(normalised[tau, i] - normalised[nu, i]) for nu in range(steps)]
            distance[i, tau] = d
            rows.append(sorted(d)[kk])  # "the distance to the interslice_knn-th nearest other slice"
        per_point.append(np.median(rows))  # "the median over rows"
    eps = np.mean(per_point)  # "the mean over points of those medians"
    for i in range(samples):
        for tau in range(steps):
            for nu in range(steps):
                if tau != nu:  # "the interslice diagonal is zeroed"
                    kernel[tau * samples + i, nu * samples + i] = math.exp(-(distance[i, tau][nu] ** 2) / eps**2)
    return kernel


def transcribed_diffusion(kernel, thresh=1e-4):
    kept = np.where(kernel < thresh, 0.0, kernel)
    return kept / kept.sum(axis=1, keepdims=True)


def drifting_trace(seed=0, steps=6, samples=9, features=4, noise=1.0, base=None):
    rng = np.random.default_rng(seed)
    start = rng.normal(size=(samples, features)) if base is None else base
    walk = np.cumsum(noise * rng.normal(size=(steps, samples, features)), axis=0)
    return start[None] * np.linspace(1, 3, steps)[:, None, None] + walk


@pytest.mark.parametrize("shape,interslice_knn", [((6, 9, 4), 3), ((4, 12, 5), 25), ((7, 4, 3), 2)])
def test_multislice_kernel_equals_the_transcription(shape, interslice_knn):
    trace = drifting_trace(1, *shape)
    expected = transcribed_multislice_kernel(trace, interslice_knn=interslice_knn)
    kernel = dyn.multislice_kernel(dyn.normalize_trace(trace), interslice_knn=interslice_knn)
    np.testing.assert_allclose(kernel.toarray(), expected, rtol=1e-10, atol=1e-12)
    operator = dyn.diffusion_operator(kernel)
    np.testing.assert_allclose(operator.toarray(), transcribed_diffusion(expected), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(operator.sum(axis=1)).ravel(), 1.0)


def test_pca_keeps_the_kernel_of_low_rank_traces():
    """F = 130 > n_pca = 100 with T n = 120 rows: PCA runs; the rows span < 100 dimensions, so distances and the
    kernel are those of the full trace."""
    rng = np.random.default_rng(2)
    trace = (rng.normal(size=(6, 20, 60)) @ rng.normal(size=(60, 130))).reshape(6, 20, 130)
    assert dyn.reduce_trace(trace).shape == (6, 20, 100)
    expected = transcribed_multislice_kernel(trace, interslice_knn=5)
    kernel = dyn.multislice_kernel(dyn.normalize_trace(trace), interslice_knn=5)
    np.testing.assert_allclose(kernel.toarray(), expected, rtol=1e-7, atol=1e-9)


def test_kernel_matches_the_m_phate_package():
    """Only where `m-phate` imports (it does not install beside our pins: its scprep needs pandas < 2.1, which does
    not import with numpy 2; run this in a throwaway environment with pandas forced). Its intraslice distances come
    from scikit-learn's NearestNeighbors, which rounds differently from scipy's pdist: agreement to ~1e-7."""
    m_phate = pytest.importorskip("m_phate")
    import graphtools
    import phate

    warnings.simplefilter("ignore")
    for shape, knn in [((6, 10, 4), 3), ((12, 30, 8), 25), ((30, 20, 6), 25), ((8, 25, 60), 5)]:
        trace = drifting_trace(3, *shape)
        ref = m_phate.kernel.multislice_kernel(
            m_phate.utils.normalize(trace), interslice_knn=min(knn, shape[0] - 1), n_jobs=1
        )
        ours = dyn.multislice_kernel(dyn.normalize_trace(trace), interslice_knn=knn)
        np.testing.assert_allclose(ours.toarray(), ref.toarray(), atol=1e-6)
        ref_operator = graphtools.Graph(ref, precomputed="affinity").diff_op.toarray()
        np.testing.assert_allclose(dyn.diffusion_operator(ours).toarray(), ref_operator, atol=1e-6)
        entropy = phate.vne.compute_von_neumann_entropy(ref_operator, t_max=100)
        assert dyn.knee_point(entropy, np.arange(100)) == phate.vne.find_knee_point(entropy, np.arange(100))


def test_knee_and_entropy_reproduce_phates_documented_examples():
    x = np.arange(20)
    assert dyn.knee_point(np.exp(-x / 10), x) == 8  # phate.vne.find_knee_point's docstring
    matrix = np.eye(10)
    matrix[0, 0], matrix[3, 2] = 5, 4
    assert dyn.knee_point(dyn.von_neumann_entropy(matrix)) == 23  # compute_von_neumann_entropy's docstring


def test_joint_embedding_is_the_left_singular_vectors_of_the_stacked_kernels():
    rng = np.random.default_rng(4)
    kernels = [rng.uniform(size=(30, 30)) for _ in range(3)]
    kernels = [k / k.sum(axis=1, keepdims=True) for k in kernels]
    embedded = dyn.joint_embedding(kernels, n_components=4)
    u, _, _ = np.linalg.svd(np.concatenate(kernels, axis=0), full_matrices=False)
    ours = np.concatenate(embedded, axis=0)
    signs = np.sign(np.sum(ours * u[:, :4], axis=0))
    np.testing.assert_allclose(ours * signs, u[:, :4], atol=1e-8)
    with pytest.raises(InvalidInputError, match="same trace nodes"):
        dyn.joint_embedding([kernels[0], kernels[1][:10, :10]])


def test_mmd_against_a_brute_force_loop():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 3)), rng.normal(loc=0.7, size=(9, 3))
    pooled = np.concatenate([x, y])
    distances = [np.linalg.norm(pooled[a] - pooled[b]) for a in range(21) for b in range(a + 1, 21)]
    h = (sorted(distances)[104] + sorted(distances)[105]) / 2  # 210 distances: the median is the middle two's mean

    def k(a, b):
        return math.exp(-np.sum((a - b) ** 2) / (2 * h * h))

    xx = sum(k(x[a], x[b]) for a in range(12) for b in range(12) if a != b) / (12 * 11)
    yy = sum(k(y[a], y[b]) for a in range(9) for b in range(9) if a != b) / (9 * 8)
    xy = sum(k(x[a], y[b]) for a in range(12) for b in range(9)) / (12 * 9)
    assert dyn.mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    xx_b = sum(k(x[a], x[b]) for a in range(12) for b in range(12)) / 144
    yy_b = sum(k(y[a], y[b]) for a in range(9) for b in range(9)) / 81
    assert dyn.mmd2(x, y, unbiased=False) == pytest.approx(xx_b + yy_b - 2 * xy, rel=1e-12)
    assert dyn.mmd2(x, y, bandwidth=0.5) != pytest.approx(dyn.mmd2(x, y))


def test_the_score_grows_as_realisations_disagree():
    base = np.random.default_rng(6).normal(size=(10, 5))

    def spec(noise):
        return [drifting_trace(s, 8, 10, 5, noise=noise, base=base) for s in range(3)]

    stable = dyn.dynamics_score(spec(0.05), n_components=4)
    unstable = dyn.dynamics_score(spec(1.5), n_components=4)
    assert stable["score"] < unstable["score"]
    assert stable["pairwise_mmd"].shape == (3, 3) and np.allclose(stable["pairwise_mmd"], stable["pairwise_mmd"].T)
    np.testing.assert_allclose(stable["realisation_scores"][0], np.mean(stable["pairwise_mmd"][0, 1:]))
    assert stable["score"] == pytest.approx(np.mean(stable["pairwise_mmd"][np.triu_indices(3, 1)]))
    assert len(stable["t_per_realisation"]) == 3 and stable["t"] >= 1
    fixed = dyn.dynamics_score(spec(0.05), n_components=4, t=3)
    assert fixed["t"] == 3 and fixed["t_per_realisation"] == []


def test_bad_traces_are_clear_errors():
    with pytest.raises(InvalidInputError, match="at least 2, got 1"):
        dyn.dynamics_score([drifting_trace()])
    with pytest.raises(InvalidInputError, match="share their steps and samples"):
        dyn.dynamics_score([drifting_trace(steps=6), drifting_trace(steps=5)])


# --- runs -------------------------------------------------------------------------------------------------------------

SMALL = {"dataset": "dummy_data", "batch_size": 8, "log_every": 1, "latent_dim": 3, "trace_samples": 6}


@pytest.fixture(scope="module")
def traced_group(tmp_path_factory):
    root = tmp_path_factory.mktemp("traced")
    for seed in range(2):
        Trainer(TrainConfig(steps=6, trace_every=2, seed=seed, **SMALL), root / f"seed{seed}").train()
    return root, [root / f"seed{seed}" for seed in range(2)]


def test_dynamics_for_runs_scores_and_stores(traced_group):
    _, runs = traced_group
    result = dyn.dynamics_for_runs(runs, n_components=3)
    assert result["runs"] == ["seed0", "seed1"]
    for path, own in zip(runs, result["realisation_scores"]):
        stored = RunDir(path).read_results()
        assert stored["dynamics.score"] == pytest.approx(result["score"])
        assert stored["dynamics.realisation_score"] == pytest.approx(own)
        assert stored["dynamics.num_realisations"] == 2


def test_dynamics_for_runs_names_runs_without_traces(traced_group):
    root, runs = traced_group
    Trainer(TrainConfig(steps=2, seed=7, **{**SMALL, "trace_samples": 100}), root / "plain").train()
    with pytest.raises(InvalidInputError, match=r"no training trace in plain \(beta=1\)"):
        dyn.dynamics_for_runs([*runs, root / "plain"], group="beta=1")
    Trainer(TrainConfig(steps=4, trace_every=4, seed=3, **SMALL), root / "sparse").train()
    with pytest.raises(InvalidInputError, match="traced at different steps"):
        dyn.dynamics_for_runs([runs[0], root / "sparse"])
    with pytest.raises(InvalidInputError, match="at least 2"):
        dyn.dynamics_for_runs(runs[:1])


def test_cli_select_dynamics(traced_group, capsys):
    from untwine.cli import main

    _, runs = traced_group
    assert main(["select", "dynamics", *map(str, runs), "--components", "3", "--t", "2"]) == 0
    out = capsys.readouterr().out
    assert "training dynamics" in out and "seed1" in out
    assert RunDir(runs[0]).read_results()["dynamics.t"] == 2
    assert main(["select", "dynamics", *map(str, runs), "--t", "soon"]) == 2
    assert "--t must be auto or a positive integer" in capsys.readouterr().err
