"""Shared metric utilities, as disentanglement_lib's `metrics/utils.py` (spec §5.0).

Array conventions here: codes are [N, d] floats and factors are [N, K] integer indices (points along axis 0;
the reference transposes them, which changes nothing numerically).
"""

from __future__ import annotations

import numpy as np
import sklearn.metrics

from untwine.errors import InvalidInputError

FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_codes(codes, name: str = "codes", min_points: int = 2) -> np.ndarray:
    """Validate a code matrix [N, d] of finite floats that fit in float32 (what encoders produce; larger values
    overflow the metrics' squares and sums, and sklearn's float32 estimators)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise InvalidInputError(f"{name} must have shape [N, d], got {list(codes.shape)}")
    if not (np.issubdtype(codes.dtype, np.floating) or np.issubdtype(codes.dtype, np.integer)):
        raise InvalidInputError(f"{name} must be numeric, got dtype {codes.dtype}")
    if codes.shape[0] < min_points:
        raise InvalidInputError(f"{name} has {codes.shape[0]} points; at least {min_points} are needed")
    if codes.shape[1] < 1:
        raise InvalidInputError(f"{name} has no dimensions")
    if not np.all(np.isfinite(codes)):
        bad = np.argwhere(~np.isfinite(codes))[0]
        raise InvalidInputError(f"{name} contains NaN or inf (first at row {bad[0]}, column {bad[1]})")
    if codes.size and np.max(np.abs(codes)) > FLOAT32_MAX:
        bad = np.argwhere(np.abs(codes) > FLOAT32_MAX)[0]
        raise InvalidInputError(
            f"{name} has values beyond float32's range (first at row {bad[0]}, column {bad[1]}: "
            f"{codes[bad[0], bad[1]]:.3g}); codes must satisfy |x| <= {FLOAT32_MAX:.3g}"
        )
    return codes.astype(np.float64, copy=False)


def check_num_bins(num_bins) -> int:
    """A positive integer number of bins (an int-valued float such as 20.0 is accepted)."""
    if isinstance(num_bins, (float, np.floating)) and float(num_bins).is_integer():
        num_bins = int(num_bins)
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise InvalidInputError(f"num_bins must be a positive integer, got {num_bins!r}")
    return int(num_bins)


def check_factors(factors, num_points: int, name: str = "factors") -> np.ndarray:
    """Validate a factor matrix [N, K] of integer indices matching `num_points` rows."""
    factors = np.asarray(factors)
    if factors.ndim != 2:
        raise InvalidInputError(f"{name} must have shape [N, K], got {list(factors.shape)}")
    if factors.shape[0] != num_points:
        raise InvalidInputError(f"{name} has {factors.shape[0]} rows but the codes have {num_points}")
    if factors.shape[1] < 1:
        raise InvalidInputError(f"{name} has no columns")
    if not np.issubdtype(factors.dtype, np.integer):
        if (
            np.issubdtype(factors.dtype, np.floating)
            and np.all(np.isfinite(factors))
            and np.all(factors == np.round(factors))
        ):
            factors = factors.astype(np.int64)
        else:
            raise InvalidInputError(f"{name} must be integer factor indices, got dtype {factors.dtype}")
    return factors


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Per code dimension: `num_bins` equal-width bins over the sample's [min, max], values 1..num_bins.

    Exactly the reference's `_histogram_discretize` (np.histogram edges, then np.digitize on edges[:-1]). A column
    whose range is too narrow for its magnitude to give `num_bins` distinct float64 edges (e.g. 1e16 + [0, 2]) is an
    InvalidInputError (numpy's "Too many bins for data range" in the reference).
    """
    num_bins = check_num_bins(num_bins)
    out = np.zeros(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        try:
            edges = np.histogram(codes[:, i], num_bins)[1]
        except ValueError:
            low, high = codes[:, i].min(), codes[:, i].max()
            raise InvalidInputError(
                f"column {i} spans [{low:.17g}, {high:.17g}], too narrow for its magnitude to make {num_bins} "
                "distinct bins in float64"
            ) from None
        out[:, i] = np.digitize(codes[:, i], edges[:-1])
    return out


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """m[i, k] = plug-in MI (nats) between discrete code i and factor k (sklearn.metrics.mutual_info_score)."""
    m = np.zeros((codes.shape[1], factors.shape[1]))
    for i in range(codes.shape[1]):
        for k in range(factors.shape[1]):
            m[i, k] = sklearn.metrics.mutual_info_score(factors[:, k], codes[:, i])
    return m


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """H[k] = empirical entropy (nats) of the sampled values of factor k (not log n_k)."""
    return np.array([sklearn.metrics.mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def check_train_test(codes_train, factors_train, codes_test, factors_test):
    """Validate a train/test pair of (codes [N, d], factors [N, K]); d and K must agree between the two."""
    codes_train = check_codes(codes_train, "codes_train")
    factors_train = check_factors(factors_train, codes_train.shape[0], "factors_train")
    codes_test = check_codes(codes_test, "codes_test", min_points=1)
    factors_test = check_factors(factors_test, codes_test.shape[0], "factors_test")
    if codes_test.shape[1] != codes_train.shape[1]:
        raise InvalidInputError(
            f"codes_test has {codes_test.shape[1]} dimensions but codes_train has {codes_train.shape[1]}"
        )
    if factors_test.shape[1] != factors_train.shape[1]:
        raise InvalidInputError(
            f"factors_test has {factors_test.shape[1]} factors but factors_train has {factors_train.shape[1]}"
        )
    return codes_train, factors_train, codes_test, factors_test


def check_classes(factors_train: np.ndarray, name: str = "factors_train") -> None:
    """Every factor must take at least two values in the training set (a classifier needs two classes)."""
    single = [k for k in range(factors_train.shape[1]) if np.unique(factors_train[:, k]).size < 2]
    if single:
        raise InvalidInputError(
            f"{name} column(s) {single} take a single value in this sample; a classifier needs at least two classes"
        )


class Scores(dict):
    """A metric's scalar results (key -> float, keyed as the reference) that also carries, in `.arrays`, the
    non-scalar quantities they were computed from (e.g. MIG's code x factor mutual-information matrix).

    It is a plain dict to every reader of scores; `evaluate_run` stores the arrays beside results.json
    (`<run>/eval/<network>/<representation>/<metric>.npz`), never in it.
    """

    def __init__(self, values=(), arrays: dict | None = None):
        super().__init__(values)
        self.arrays = {k: np.asarray(v) for k, v in (arrays or {}).items()}
