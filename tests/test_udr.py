"""UDR: against a loop-based transcription of the reference's formulas (spec model-selection-methods.md §2.1,
disentanglement-lib-reference.md §5.14), hand-built cases, and the run-level protocol."""

import itertools
import json
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.linear_model import Lasso
from sklearn.preprocessing import StandardScaler

from untwine.cli import main
from untwine.config import TrainConfig
from untwine.errors import InvalidInputError
from untwine.runs import RunDir
from untwine.selection.groups import seed_groups
from untwine.selection.udr import encode_runs, relative_strength, udr, udr_for_runs, udr_generator
from untwine.training import Trainer

# --- an independent transcription of the spec's description, one loop per sentence -----------------------------------


def transcribed_udr(reps, kl, correlation, filter_low_kl, kl_filter_threshold):
    num_models = len(reps)
    latent_dim = reps[0].shape[1]
    normalised, keep = [], []
    for i in range(num_models):
        # "z-scored with StandardScaler (ddof 0), then multiplied by the mask KL > 0.01 (hard-coded)"
        z = StandardScaler().fit(reps[i]).transform(reps[i])
        for a in range(latent_dim):
            if not kl[i][a] > 0.01:
                z[:, a] = 0.0
        normalised.append(z)
        keep.append([kl[i][a] > kl_filter_threshold for a in range(latent_dim)])
    pairwise = [[0.0] * num_models for _ in range(num_models)]
    for i in range(num_models):
        for j in range(num_models):
            if i == j:
                continue
            R = np.zeros((latent_dim, latent_dim))
            if correlation == "lasso":
                # "fit Lasso(alpha=0.1) (multi-output) to predict model j's codes from model i's; R = |coef|^T"
                coef = Lasso(alpha=0.1).fit(normalised[i], normalised[j]).coef_
                for a in range(latent_dim):
                    for b in range(latent_dim):
                        R[a, b] = abs(coef[b, a])
            else:
                # "R[a, b] = |Spearman rho(z_i,a, z_j,b)| with nan_policy omit"
                for a in range(latent_dim):
                    for b in range(latent_dim):
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")  # a zeroed latent is constant: rho is NaN
                            rho = scipy.stats.spearmanr(normalised[i][:, a], normalised[j][:, b], nan_policy="omit")[0]
                        R[a, b] = abs(rho)
            rows = [a for a in range(latent_dim) if keep[i][a] or not filter_low_kl]
            cols = [b for b in range(latent_dim) if keep[j][b] or not filter_low_kl]
            # "score_x = mean over columns of max^2/sum; score_y = mean over rows; NaN (0/0) -> 0 before averaging"
            # (numpy's max and sum: a NaN entry makes its column's and row's term NaN, hence 0)
            col_terms = [_term([R[a, b] for a in rows]) for b in cols]
            row_terms = [_term([R[a, b] for b in cols]) for a in rows]
            pairwise[i][j] = (sum(col_terms) / len(col_terms) + sum(row_terms) / len(row_terms)) / 2
    # "model_score_i = median over j != i of UDR[j, i]"
    scores = [float(np.median([pairwise[j][i] for j in range(num_models) if j != i])) for i in range(num_models)]
    return np.array(scores), np.array(pairwise)


def _term(values):
    if any(np.isnan(v) for v in values) or sum(values) == 0:
        return 0.0
    return max(values) ** 2 / sum(values)


def _correlated_models(seed=0, num_models=4, num_points=300, latent_dim=5):
    """Models that mix 3 shared sources differently, plus noise latents; KLs around both thresholds."""
    rng = np.random.default_rng(seed)
    sources = rng.normal(size=(num_points, 3))
    reps, kls = [], []
    for _ in range(num_models):
        mixing = np.eye(3) + 0.4 * rng.normal(size=(3, 3))
        codes = np.concatenate([sources @ mixing, rng.normal(size=(num_points, latent_dim - 3))], axis=1)
        codes[:, rng.permutation(latent_dim)] = codes.copy()
        reps.append(codes * rng.uniform(0.5, 3.0, size=latent_dim) + rng.normal(size=latent_dim))
        kls.append(rng.choice([0.0, 0.004, 0.02, 1.5, 3.0], size=latent_dim, p=[0.1, 0.15, 0.15, 0.3, 0.3]))
    for kl in kls:
        kl[0] = 2.0  # every model keeps an informative latent
    return np.stack(reps), np.stack(kls)


@pytest.mark.parametrize("correlation", ["lasso", "spearman"])
@pytest.mark.parametrize("filter_low_kl,threshold", [(True, 0.01), (False, 0.01), (True, 0.001)])
def test_udr_equals_the_transcribed_reference(correlation, filter_low_kl, threshold):
    reps, kls = _correlated_models()
    expected_scores, expected_pairwise = transcribed_udr(list(reps), list(kls), correlation, filter_low_kl, threshold)
    result = udr(reps, kls, correlation=correlation, filter_low_kl=filter_low_kl, kl_threshold=threshold)
    np.testing.assert_allclose(result["pairwise_disentanglement_scores"], expected_pairwise, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result["model_scores"], expected_scores, rtol=1e-9, atol=1e-12)
    assert result["model_scores"].shape == (4,) and result["pairwise_disentanglement_scores"].shape == (4, 4)


def test_lasso_pairs_are_asymmetric_and_the_model_score_is_its_column():
    reps, kls = _correlated_models(seed=3, num_models=3)
    result = udr(reps, kls, correlation="lasso")
    pairwise = result["pairwise_disentanglement_scores"]
    assert not np.allclose(pairwise, pairwise.T)
    np.testing.assert_allclose(result["model_scores"][0], np.median([pairwise[1, 0], pairwise[2, 0]]))
    spearman = udr(reps, kls, correlation="spearman")["pairwise_disentanglement_scores"]
    np.testing.assert_allclose(spearman, spearman.T, atol=1e-12)  # |rho| is symmetric in the two models


# --- hand-built cases ------------------------------------------------------------------------------------------------


def test_relative_strength_by_hand():
    assert relative_strength(np.eye(3)) == 1.0
    assert relative_strength(np.array([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]])) == pytest.approx(2 / 3)
    assert relative_strength(np.ones((3, 3))) == pytest.approx(1 / 3)
    assert relative_strength(np.zeros((3, 3))) == 0.0
    # a 0/0 row/column counts as 0, not as missing: (1 + 0) / 2 on both halves
    assert relative_strength(np.array([[1.0, 0.0], [0.0, 0.0]])) == pytest.approx(0.5)
    assert relative_strength(2.5 * np.eye(3)) == pytest.approx(2.5)  # not scale-free (quirk 9)


def _factorial_codes(latent_dim=3, levels=6):
    """Every combination of `levels` values per latent: exactly uncorrelated columns (and ranks)."""
    grid = np.array(list(itertools.product(range(levels), repeat=latent_dim)), dtype=np.float64)
    return grid - grid.mean(axis=0)


def test_identical_models_score_one_with_spearman_and_one_minus_alpha_with_lasso():
    codes = _factorial_codes()
    reps = np.stack([codes, codes, codes])
    kl = np.ones((3, 3))
    np.testing.assert_allclose(udr(reps, kl, correlation="spearman")["model_scores"], 1.0, atol=1e-12)
    # orthonormal standardised design: the lasso coefficient of the same latent is soft-threshold(1, 0.1) = 0.9
    np.testing.assert_allclose(udr(reps, kl, correlation="lasso")["model_scores"], 0.9, atol=1e-6)


def test_permuted_and_sign_flipped_latents_score_as_high_as_identical_ones():
    codes = _factorial_codes(latent_dim=4, levels=5)
    other = codes[:, [2, 0, 3, 1]] * np.array([-1.0, 1.0, -1.0, 1.0]) * np.array([3.0, 0.5, 1.0, 7.0])
    reps, kl = np.stack([codes, other]), np.ones((2, 4))
    np.testing.assert_allclose(udr(reps, kl, correlation="spearman")["model_scores"], 1.0, atol=1e-12)
    np.testing.assert_allclose(udr(reps, kl, correlation="lasso")["model_scores"], 0.9, atol=1e-6)
    mixed = np.stack([codes, codes @ np.full((4, 4), 0.5)])  # every latent of one is every latent of the other
    assert udr(mixed, kl, correlation="spearman")["model_scores"].max() < 0.6


def test_one_dead_latent_is_filtered():
    rng = np.random.default_rng(1)
    codes = _factorial_codes(latent_dim=3, levels=6)
    noisy = np.concatenate([codes, rng.normal(size=(len(codes), 1))], axis=1)  # + a dead latent (noise)
    reps = np.stack([noisy, noisy[:, [1, 0, 2, 3]]])
    kl = np.array([[1.0, 1.0, 1.0, 0.001], [1.0, 1.0, 1.0, 0.001]])
    filtered = udr(reps, kl, correlation="spearman")
    np.testing.assert_allclose(filtered["model_scores"], 1.0, atol=1e-12)
    assert filtered["num_informative"].tolist() == [3, 3]
    # unfiltered, the dead latent is zeroed (KL <= 0.01): its Spearman row and column are NaN, and a NaN makes every
    # column's and row's max NaN, which counts as 0: the pair scores 0 (quirk 3). The lasso gives it zero weight:
    # three columns/rows of 0.9 and one 0/0 -> (3 * 0.9 + 0) / 4 on both halves.
    unfiltered = udr(reps, kl, correlation="spearman", filter_low_kl=False)
    np.testing.assert_allclose(unfiltered["model_scores"], 0.0, atol=1e-12)
    lasso = udr(reps, kl, correlation="lasso", filter_low_kl=False)
    np.testing.assert_allclose(lasso["model_scores"], 3 * 0.9 / 4, atol=1e-6)


def test_reference_unit_test_targets():
    """disentanglement_lib's udr_test: one informative latent + 9 noise latents, KL mask [1, 0, ..., 0]."""
    rng = np.random.default_rng(0)
    first = rng.uniform(size=(1000, 1))
    reps = np.stack([np.concatenate([first, rng.uniform(size=(1000, 9))], axis=1) for _ in range(2)])
    kl = np.zeros((2, 10))
    kl[:, 0] = 1.0
    assert udr(reps, kl, filter_low_kl=False)["model_scores"].max() <= 0.2
    assert 0.8 <= udr(reps, kl, filter_low_kl=True)["model_scores"].min() <= 1.0


def test_no_informative_latent_is_an_error_or_zero():
    reps, kls = _correlated_models(seed=2, num_models=3)
    kls[1] = 0.001
    with pytest.raises(InvalidInputError, match="no latent of b has a KL above 0.01"):
        udr(reps, kls, names=["a", "b", "c"])
    result = udr(reps, kls, no_informative="zero")
    pairwise = result["pairwise_disentanglement_scores"]
    assert pairwise[1].tolist() == [0.0, 0.0, 0.0] and pairwise[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert pairwise[0, 2] > 0 and result["model_scores"][1] == 0.0


def test_bad_arrays_are_clear_errors():
    reps, kls = _correlated_models(num_models=2)
    with pytest.raises(InvalidInputError, match="at least 2, got 1"):
        udr(reps[:1], kls[:1])
    with pytest.raises(InvalidInputError, match=r"kl must have shape \[2, 5\]"):
        udr(reps, kls[:, :4])
    with pytest.raises(InvalidInputError, match="models, points, latents"):
        udr(reps[0], kls)
    with pytest.raises(InvalidInputError, match="unknown correlation"):
        udr(reps, kls, correlation="pearson")
    bad = reps.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="finite"):
        udr(bad, kls)


# --- protocol: runs ---------------------------------------------------------------------------------------------------

# fc: after a few steps its latents have KLs above 0.01 (the conv encoder's are ~1e-4: all filtered out)
SMALL = {"dataset": "dummy_data", "architecture": "fc", "batch_size": 8, "log_every": 1, "latent_dim": 4}


@pytest.fixture(scope="module")
def seed_group(tmp_path_factory):
    root = tmp_path_factory.mktemp("udr-runs")
    for seed in range(3):
        Trainer(TrainConfig(steps=3, seed=seed, **SMALL), root / f"seed{seed}").train()
    return [root / f"seed{seed}" for seed in range(3)]


def test_runs_are_encoded_on_the_same_observations(seed_group):
    reps, kl, runs = encode_runs(seed_group, num_points=40, batch_size=10, eval_seed=5)
    assert reps.shape == (3, 40, 4) and kl.shape == (3, 4)
    data = RunDir(seed_group[0]).load_dataset()
    _, observations = data.sample(40, udr_generator(5))
    for i, path in enumerate(seed_group):
        model = RunDir(path).load_model()
        with torch.no_grad():
            mean, logvar = model.encode(observations)
        mean, logvar = mean.double().numpy(), logvar.double().numpy()
        np.testing.assert_allclose(reps[i], mean, rtol=1e-5, atol=1e-6)
        by_hand = np.mean(0.5 * (mean**2 + np.exp(logvar) - logvar - 1), axis=0)
        np.testing.assert_allclose(kl[i], by_hand, rtol=1e-5, atol=1e-7)
    again, _, _ = encode_runs(seed_group, num_points=40, batch_size=10, eval_seed=5)
    np.testing.assert_array_equal(again, reps)


def test_udr_for_runs_stores_each_model_score(seed_group):
    result = udr_for_runs(seed_group, num_points=100, batch_size=10, correlation="spearman")
    for i, path in enumerate(seed_group):
        stored = RunDir(path).read_results()
        assert stored["udr.spearman.model_score"] == pytest.approx(result["model_scores"][i])
        assert stored["udr.spearman.num_models"] == 3
        assert "train.global_step" in stored  # merged, nothing lost
    reps, kl, _ = encode_runs(seed_group, num_points=100, batch_size=10)
    np.testing.assert_allclose(result["model_scores"], udr(reps, kl, correlation="spearman")["model_scores"])


def test_udr_for_runs_rejects_bad_groups(seed_group, tmp_path):
    with pytest.raises(InvalidInputError, match=r"at least 2 runs \(beta=4\), got 1"):
        udr_for_runs(seed_group[:1], group="beta=4")
    Trainer(TrainConfig(steps=1, **{**SMALL, "latent_dim": 3}), tmp_path / "small").train()
    with pytest.raises(InvalidInputError, match="same number of latents.*small: 3"):
        udr_for_runs([seed_group[0], tmp_path / "small"])
    Trainer(TrainConfig(steps=1, **{**SMALL, "dataset": "dsprites"}), tmp_path / "sprites").train()
    with pytest.raises(InvalidInputError, match="same data set.*sprites: dsprites"):
        udr_for_runs([seed_group[0], tmp_path / "sprites"])
    with pytest.raises(InvalidInputError, match="multiple of batch_size"):
        udr_for_runs(seed_group, num_points=95, batch_size=10)
    assert "udr.lasso.model_score" not in RunDir(seed_group[0]).read_results()


def test_runs_are_grouped_by_specification(seed_group, tmp_path):
    for seed in (0, 1):
        Trainer(TrainConfig(steps=3, seed=seed, beta=4.0, **SMALL), tmp_path / f"b4-seed{seed}").train()
    groups = seed_groups([tmp_path / "b4-seed0", *seed_group, tmp_path / "b4-seed1"])
    assert {label: [r.name for r in runs] for label, runs in groups.items()} == {
        "beta=4.0": ["b4-seed0", "b4-seed1"],
        "beta=1.0": ["seed0", "seed1", "seed2"],
    }
    assert list(seed_groups(seed_group)) == ["beta_vae"]
    with pytest.raises(InvalidInputError, match=r"group beta=4.0 has 1 run \(b4-seed0\).*at least 2"):
        seed_groups([*seed_group, tmp_path / "b4-seed0"])


def test_cli_select_udr(seed_group, tmp_path, capsys):
    for seed in (0, 1):
        Trainer(TrainConfig(steps=3, seed=seed, beta=4.0, **SMALL), tmp_path / f"b4-seed{seed}").train()
    others = [str(tmp_path / "b4-seed0"), str(tmp_path / "b4-seed1")]
    code = main(["select", "udr", *map(str, seed_group[:2]), *others, "--num-points", "50", "--batch-size", "5"])
    assert code == 0
    out = capsys.readouterr().out
    assert "seed0" in out and "b4-seed1" in out and "beta=4.0" in out
    stored = json.loads((seed_group[0] / "results.json").read_text())
    assert 0.0 <= stored["udr.lasso.model_score"] <= 1.0
    assert json.loads((tmp_path / "b4-seed1" / "results.json").read_text())["udr.lasso.num_models"] == 2
    assert main(["select", "udr", str(seed_group[0])]) == 2
    assert "each group needs at least 2" in capsys.readouterr().err
