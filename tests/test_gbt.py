"""untwine.metrics.gbt against scikit-learn's GradientBoostingClassifier() itself.

Tie-free inputs: codes on a grid with random multiplicities per cell (every feature is discrete, so two features
never induce the same partition of a node, and unequal cell counts leave no two cuts with equal improvement). On
these, sklearn's ensembles do not depend on its random_state (asserted), and untwine's must be the same: equal
predictions, importances within 1e-6. On continuous codes, cuts that isolate the same samples through different
features tie exactly or to the last bit; sklearn breaks them by its random feature order (emulated here) and float
rounding (not emulated), so the metrics need only lie within sklearn's own seed-to-seed spread (TIE_TOLERANCE).
"""

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from untwine.errors import InvalidInputError
from untwine.metrics import downstream, gbt
from untwine.metrics.dci import dci
from untwine.metrics.predictors import fit_boosted_trees

# sklearn's seed-to-seed spread on dsprites_like_codes(600, 300) over random_state 0..7 (docs/design-notes.md):
# 4 standard deviations of each value (the range of the 8 values in brackets). untwine vs sklearn at the same seed
# differed by at most 0.0029 (D), 0.0022 (C), 0.0006 / 0.0100 (informativeness train / test), 0.0100 (downstream).
TIE_TOLERANCE = {
    "disentanglement": 0.0107,  # sd 0.00267 (range 0.0075)
    "completeness": 0.0045,  # sd 0.00113 (0.0032)
    "informativeness_train": 0.0025,  # sd 0.00063 (0.0017)
    "informativeness_test": 0.0119,  # sd 0.00297 (0.0078)
    "downstream_test": 0.0143,  # the smallest of the three factors': sd 0.00356 (0.0067), 0.0071, 0.0109
}


def grid_codes(seed: int, sizes: tuple, classes: int, scale: float = 2.0):
    """Codes on a grid (per-feature scale and offset), 1-5 points per cell; labels a noisy function of them."""
    rng = np.random.default_rng(seed)
    cells = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
    x = np.repeat(cells, rng.integers(1, 6, len(cells)), axis=0).astype(float)
    x = x * rng.uniform(0.5, 2, len(sizes)) + rng.normal(size=len(sizes))
    y = (np.floor((x @ rng.normal(size=len(sizes)) + rng.normal(0, 1.0, len(x))) * scale) % classes).astype(int)
    off_grid = x + np.random.default_rng(seed + 1).normal(0, 0.3, x.shape)  # test points between grid values
    return x, y, off_grid


def dsprites_like_codes(n_train: int, n_test: int, seed: int = 0):
    """Continuous codes of three dSprites-like factors (3, 6 and 8 values): aligned, mixed and noise latents."""
    rng = np.random.default_rng(seed)
    sizes = np.array([3, 6, 8])

    def sample(n):
        f = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
        scaled = f / sizes - 0.5
        mixed = scaled[:, 1] + scaled[:, 2] + rng.normal(0, 0.1, n)
        return np.c_[scaled + rng.normal(0, 0.1, scaled.shape), mixed, rng.normal(size=n)], f

    return (*sample(n_train), *sample(n_test))


def assert_same_as_sklearn(x, y, x_test, seed=0):
    ours = gbt.fit(x, [y], seed, n_jobs=1).classifier(0)
    theirs = GradientBoostingClassifier(random_state=seed).fit(x, y)
    other_seed = GradientBoostingClassifier(random_state=seed + 1).fit(x, y)
    assert np.abs(theirs.feature_importances_ - other_seed.feature_importances_).max() < 1e-9, "input has ties"
    assert np.array_equal(ours.classes_, theirs.classes_)
    assert np.array_equal(ours.predict(x), theirs.predict(x))
    assert np.array_equal(ours.predict_training(), theirs.predict(x))
    assert np.array_equal(ours.predict(x_test), theirs.predict(x_test))
    assert np.abs(ours.feature_importances_ - theirs.feature_importances_).max() < 1e-6
    assert ours.feature_importances_.sum() == pytest.approx(1.0)
    return ours, theirs


@pytest.mark.parametrize(
    "seed, sizes, classes",
    [(0, (7, 5), 2), (1, (6, 4, 3), 3), (3, (5, 5, 4, 3), 2), (4, (12, 10), 13)],
)
def test_same_ensembles_as_sklearn_on_tie_free_inputs(seed, sizes, classes):
    x, y, off_grid = grid_codes(seed, sizes, classes)
    assert np.unique(y).size == classes
    assert_same_as_sklearn(x, y, off_grid, seed)


def test_raw_scores_equal_sklearns_decision_function():
    x, y, off_grid = grid_codes(1, (6, 4, 3), 3)
    ours = gbt.fit(x, [y], 1, n_jobs=1)
    theirs = GradientBoostingClassifier(random_state=1).fit(x, y)
    assert np.abs(ours.decision_function(off_grid) - theirs.decision_function(off_grid)).max() < 1e-9


def test_many_classes_and_labels_that_are_not_0_to_k():
    """40 classes (dSprites' orientation), ~9 points each. With so few points per class two features tie often
    (cuts with equal counts of a class on the left have equal improvements at the first stage), so one feature:
    no cross-feature ties by construction. (113 classes of ~5 points drive sklearn's Newton steps to 1e33, where
    the last bits decide; the 113 trees per stage of DCI on dSprites are tested as several classifiers.)"""
    x, y, off_grid = grid_codes(1, (120,), 40, scale=20.0)
    y = 10 * y + 7  # sklearn encodes sorted labels as 0..K-1; predictions are the original labels
    assert np.unique(y).size == 40
    ours, theirs = assert_same_as_sklearn(x, y, off_grid, 1)
    assert set(ours.predict(x)) <= set(y)


def test_values_closer_than_1e_7_are_one_value():
    """sklearn never cuts between sorted values within FEATURE_THRESHOLD = 1e-7 (float32 arithmetic)."""
    x, y, off_grid = grid_codes(2, (9, 8), 5)
    x = x.astype(np.float32)
    close = x[:, 0] == x[:, 0].max()
    x[close, 0] = np.nextafter(x[close, 0], np.float32(np.inf))  # every other point of that level one ulp apart
    x[close & (np.arange(len(x)) % 2 == 0), 0] = np.nextafter(x[close & (np.arange(len(x)) % 2 == 0), 0], 0)
    assert len(np.unique(x[close, 0])) == 2
    assert_same_as_sklearn(x, y, off_grid.astype(np.float32), 2)


def test_several_classifiers_at_once_equal_separate_fits():
    """dSprites' factors: 3 + 6 + 40 + 32 + 32 = 113 trees per stage, grown together."""
    x, y, off_grid = grid_codes(1, (6, 4, 3), 3)
    rng = np.random.default_rng(0)
    labels = [y] + [(y * 7 + rng.integers(0, size, len(y))) % size for size in (6, 40, 32, 32)]
    seeds = [3, 4, 5, 6, 7]
    together = gbt.fit(x, labels, seeds, n_jobs=1)
    assert together.value.shape[1] == 113
    for c, (labels_c, seed) in enumerate(zip(labels, seeds)):
        alone = gbt.fit(x, [labels_c], seed, n_jobs=1).classifier(0)
        assert np.array_equal(together.classifier(c).predict(off_grid), alone.predict(off_grid))
        assert np.array_equal(together.importances[c], alone.feature_importances_)


def test_result_does_not_depend_on_threads():
    xtr, ftr, xte, fte = dsprites_like_codes(400, 100)
    one = gbt.fit(xtr, list(ftr.T), 0, n_jobs=1)
    two = gbt.fit(xtr, list(ftr.T), 0, n_jobs=2)
    assert np.array_equal(one.decision_function(xte, n_jobs=1), two.decision_function(xte, n_jobs=2))
    assert all(np.array_equal(a, b) for a, b in zip(one.importances, two.importances))


def test_tied_inputs_give_metrics_within_sklearns_seed_spread():
    xtr, ftr, xte, fte = dsprites_like_codes(600, 300)
    for seed in (1,):
        ours = dci(xtr, ftr, xte, fte, random_state=seed, n_jobs=1)
        theirs = dci(xtr, ftr, xte, fte, random_state=seed, n_jobs=1, estimator="sklearn")
        for key, value in ours.items():
            assert abs(value - theirs[key]) <= TIE_TOLERANCE[key], key
        _, ours_test = downstream.factor_accuracies(xtr, ftr, xte, fte, "boosted_trees", seed, n_jobs=1)
        _, theirs_test = downstream.factor_accuracies(
            xtr, ftr, xte, fte, "boosted_trees", seed, n_jobs=1, estimator="sklearn"
        )
        assert np.abs(ours_test - theirs_test).max() <= TIE_TOLERANCE["downstream_test"]


def test_a_pure_or_constant_input_has_no_splits_and_zero_importances():
    x = np.ones((20, 3))
    y = np.arange(20) % 2
    ours = gbt.fit(x, [y], 0, n_jobs=1).classifier(0)
    theirs = GradientBoostingClassifier(random_state=0).fit(x, y)
    assert np.array_equal(ours.feature_importances_, np.zeros(3))
    assert np.array_equal(ours.predict(x), theirs.predict(x))


@pytest.mark.parametrize("estimator", ["untwine", "sklearn"])
def test_bad_input_is_refused_with_a_clear_error(estimator):
    x = np.random.default_rng(0).normal(size=(30, 2))
    y = np.arange(30) % 3
    with pytest.raises(InvalidInputError, match="single value"):
        fit_boosted_trees(x, [np.zeros(30, int)], [0], estimator)
    for bad in (np.nan, np.inf):
        x_bad = x.copy()
        x_bad[4, 1] = bad
        with pytest.raises(InvalidInputError, match=r"NaN or inf \(first at row 4, column 1\)"):
            fit_boosted_trees(x_bad, [y], [0], estimator)
    with pytest.raises(InvalidInputError, match="too large for float32"):
        fit_boosted_trees(x * 1e300, [y], [0], estimator)
    with pytest.raises(InvalidInputError, match="unknown estimator"):
        fit_boosted_trees(x, [y], [0], "xgboost")


def test_bad_input_to_a_fitted_ensemble_and_to_fit():
    x = np.random.default_rng(0).normal(size=(30, 2))
    model = gbt.fit(x, [np.arange(30) % 2], 0, n_jobs=1, n_stages=3)
    with pytest.raises(InvalidInputError, match="dimensions"):
        model.predict(np.zeros((3, 5)))
    with pytest.raises(InvalidInputError, match="NaN"):
        model.predict(np.full((3, 2), np.nan))
    with pytest.raises(InvalidInputError, match="shape"):
        gbt.fit(x, [np.arange(29) % 2])
    with pytest.raises(InvalidInputError, match="random states"):
        gbt.fit(x, [np.arange(30) % 2], [0, 1])
    with pytest.raises(InvalidInputError, match="n_jobs"):
        gbt.fit(x, [np.arange(30) % 2], n_jobs=0)


def test_trees_with_leaves_above_depth_3_predict_as_sklearn():
    """A label that one cut separates: after the first stage's root split both children are pure in the gradient
    (impurity 0), so trees stop at depth 1. Predictions go through complete depth-3 trees (gbt._complete_trees):
    the raw scores must still be sklearn's."""
    x, _, off_grid = grid_codes(5, (8, 6), 2)
    y = (x[:, 0] > np.median(x[:, 0])).astype(int)
    ours = gbt.fit(x, [y], 0, n_jobs=1)
    theirs = GradientBoostingClassifier(random_state=0).fit(x, y)
    assert (ours.feature[:, 0, 0] >= 0).all() and (ours.feature[:, 0, 1:] < 0).any()  # leaves at depth 1
    assert np.abs(ours.decision_function(off_grid)[:, 0] - theirs.decision_function(off_grid)).max() < 1e-9
    assert np.array_equal(ours.classifier(0).predict(off_grid), theirs.predict(off_grid))


def test_two_workers_grow_the_same_trees(monkeypatch):
    """Trees of a stage spread over two numba workers (forced even for this small fit) give bit-identical
    ensembles: each tree is grown start to end by one worker."""
    monkeypatch.setattr(gbt, "PAIRS_PER_THREAD", 1)
    xtr, ftr, xte, _ = dsprites_like_codes(300, 50)
    one = gbt.fit(xtr, list(ftr.T), [0, 1, 2], n_jobs=1)
    two = gbt.fit(xtr, list(ftr.T), [0, 1, 2], n_jobs=2)
    for name in ("feature", "threshold", "value", "training_raw"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
    assert np.array_equal(one.decision_function(xte, n_jobs=1), two.decision_function(xte, n_jobs=2))
    assert all(np.array_equal(a, b) for a, b in zip(one.importances, two.importances))
