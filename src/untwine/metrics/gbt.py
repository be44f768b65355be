"""scikit-learn's `GradientBoostingClassifier()` re-implemented exactly, fitting many classifiers at once.

The reference metrics (DCI, downstream boosted trees, fairness; spec §5.0) fit sklearn's
`GradientBoostingClassifier()` with its defaults, one per factor. This module grows the same ensembles: log-loss,
100 stages, learning rate 0.1, depth-3 regression trees (min_samples_split 2, min_samples_leaf 1, no subsampling,
every feature considered), on the facts of scikit-learn 1.9's code (`ensemble/_gb.py`, `tree/_splitter.pyx`,
`_partitioner.pyx`, `_criterion.pyx`, `_tree.pyx`, `_loss/_loss.pyx.tp`):

- classes encoded 0..K-1 in sorted order; K = 2 grows ONE tree per stage on the half-binomial loss (raw score of
  class 1, predicted class 1 when raw >= 0), K > 2 one tree per class on the half-multinomial loss (argmax);
- initial raw scores from the class priors p_k = n_k / n, clipped to [eps, 1 - eps]: logit(p_1) (K = 2) or
  log(p_k / gmean(p)) (K > 2);
- per stage the negative gradient y_k - p_k (softmax with the max subtracted; the binomial one as sklearn's
  `cgradient_half_binomial`), all trees of a stage fitted to the gradient of the stage's start;
- trees: squared-error splits (sklearn 1.9 grows GBT trees with `criterion="squared_error"`; the reference's
  friedman_mse proxy n_l n_r / n (mean_l - mean_r)^2 differs from sum_l^2 / n_l + sum_r^2 / n_r by a constant,
  so both pick the same split up to rounding) maximising sum_l^2 / n_l + sum_r^2 / n_r over the float32 features;
  a cut between consecutive sorted values a < b only where b > a + 1e-7 in float32 arithmetic (sklearn's
  FEATURE_THRESHOLD), threshold a / 2 + b / 2 in float64, samples with x <= threshold going left; a node is a leaf
  at depth 3, with fewer than 2 samples, with impurity (sq / n - mean^2) <= float64 eps, when no cut exists, or when
  the weighted impurity decrease + eps < 0;
- leaf values by sklearn's `_update_terminal_regions` Newton step: mean(-g) / mean(p (1 - p)) (times (K - 1) / K
  for K > 2), 0 where the denominator is below 1e-150; raw += 0.1 * value;
- `feature_importances_`: per tree the impurity decreases n_t imp_t - n_l imp_l - n_r imp_r summed per feature over
  its splits, divided by n; averaged over the trees with at least one split; normalised to sum 1 (zeros if none).

Ties: where two cuts improve equally, sklearn keeps the first it meets, visiting each node's features in a random
order drawn from its `random_state`. That draw is emulated (`_feature_order`: each tree's seed from the
classifier's RandomState, the splitter's xorshift and Fisher-Yates over its persistent feature array, constant
features, nodes in depth-first order), so exact ties go the same way for the same seed. Not emulated: the order in
which sklearn sums a node's total; cuts whose improvements differ only in the last bits (e.g. one sample isolated
through two features) can then go the other way. On tie-free inputs the ensembles, predictions and importances
are sklearn's (tests/test_gbt.py); on continuous codes the metric values stay within sklearn's own spread over
random_state (docs/design-notes.md, README.md).

Why numba (CPU only): the split search visits every (sample, tree, feature) once per tree level, in each
feature's sorted order, with a running sum per (tree, node). One compiled loop keeps those sums in L1; all
classifiers fitted together share the presorted features (the inner loop runs over every tree of every classifier
for one sample). Measured at the benchmark's size (10,000 x 10 codes, 113 trees, 1 thread): the root-level search
takes 0.025 CPU-s in numba and 0.71 CPU-s as torch tensor passes (gather, cumulative sum, proxies, masked max),
29x more, and deeper levels add segment bookkeeping to torch. The codes are NumPy arrays on the CPU whatever
device the model ran on.
"""

from __future__ import annotations

import contextlib
import os

import numba
import numpy as np
from scipy.special import logit
from sklearn.utils import check_random_state

from untwine.errors import InvalidInputError

N_STAGES = 100
LEARNING_RATE = 0.1
MAX_DEPTH = 3
N_INTERNAL = 2**MAX_DEPTH - 1  # heap-ordered nodes: children of h are 2h + 1, 2h + 2
N_NODES = 2 ** (MAX_DEPTH + 1) - 1
FEATURE_THRESHOLD = np.float32(1e-7)
EPSILON = float(np.finfo(np.float64).eps)
ESTIMATORS = ("untwine", "sklearn")


# --- compiled kernels -------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _negative_gradient(raw, y, offsets, n_classes, neg_grad, y01):
    """neg_grad[i, t] = -(dloss / draw[i, t]) and y01[i, t] = the tree's 0/1 target, for every classifier."""
    n = raw.shape[0]
    for i in range(n):
        for c in range(n_classes.shape[0]):
            o = offsets[c]
            if n_classes[c] == 2:  # half-binomial, as sklearn's cgradient_half_binomial
                yt = float(y[i, c])
                r = raw[i, o]
                if r > -37.0:
                    e = np.exp(-r)
                    grad = ((1.0 - yt) - yt * e) / (1.0 + e)
                else:
                    grad = np.exp(r) - yt
                neg_grad[i, o] = -grad
                y01[i, o] = yt
            else:  # half-multinomial: softmax with the max subtracted
                k_count = n_classes[c]
                m = raw[i, o]
                for k in range(1, k_count):
                    if m < raw[i, o + k]:
                        m = raw[i, o + k]
                total = 0.0
                for k in range(k_count):
                    neg_grad[i, o + k] = np.exp(raw[i, o + k] - m)
                    total += neg_grad[i, o + k]
                for k in range(k_count):
                    p = neg_grad[i, o + k] / total
                    target = 1.0 if y[i, c] == k else 0.0
                    neg_grad[i, o + k] = -(p - target)
                    y01[i, o + k] = target


@numba.njit(cache=True)
def _node_sums(values, node, n_nodes):
    """Per tree and node: (count, sum, sum of squares) of `values` over the samples in the node."""
    n, trees = values.shape
    count = np.zeros((trees, n_nodes))
    total = np.zeros((trees, n_nodes))
    squares = np.zeros((trees, n_nodes))
    for t in range(trees):
        for i in range(n):
            h = node[i, t]
            v = values[i, t]
            count[t, h] += 1.0
            total[t, h] += v
            squares[t, h] += v * v
    return count, total, squares


@numba.njit(cache=True)
def _local_nodes(node, first, searched):
    """[N, trees] int8: j when the sample is in searched node first + j, else -1 (compact for the scan)."""
    n, trees = node.shape
    width = searched.shape[1]
    local = np.full((n, trees), -1, dtype=np.int8)
    for i in range(n):
        for t in range(trees):
            j = node[i, t] - first
            if 0 <= j < width and searched[t, j]:
                local[i, t] = j
    return local


@numba.njit(parallel=True, cache=True)
def _split_search(sorted_x, order, neg_grad, local, node_count, node_sum):
    """Best cut of every searched node (local index j >= 0), per feature: proxy, threshold, and the node's
    smallest and largest value of the feature (sklearn's constant-feature test).

    One pass per feature over the samples in that feature's sorted order; for each sample and tree, the running
    (count, sum) of the sample's node is the left side of the cut just below the sample, summed in the order
    sklearn sums it. Exact proxies sum_l^2 / n_l + sum_r^2 / n_r are computed only for cuts whose estimate
    (reciprocal products, relative error < 1e-15) comes within 1e-9 of the node's best so far, so the comparisons
    are sklearn's.
    """
    n_features, n = sorted_x.shape
    trees, width = node_count.shape
    best = np.full((n_features, trees, width), -np.inf)
    threshold = np.zeros((n_features, trees, width))
    lowest = np.zeros((n_features, trees, width), dtype=np.float32)
    highest = np.zeros((n_features, trees, width), dtype=np.float32)
    reciprocal = 1.0 / np.arange(n + 1, dtype=np.float64)
    for f in numba.prange(n_features):
        # per (tree, node): running count, running sum, node count, node sum, screen, last value
        state = np.zeros((trees, width, 6))
        for t in range(trees):
            for j in range(width):
                state[t, j, 2] = node_count[t, j]
                state[t, j, 3] = node_sum[t, j]
                state[t, j, 4] = -np.inf
        for p in range(n):
            i = order[f, p]
            v = sorted_x[f, p]
            for t in range(trees):
                j = local[i, t]
                if j < 0:
                    continue
                st = state[t, j]
                c = st[0]
                if c == 0.0:
                    lowest[f, t, j] = v
                else:
                    previous = np.float32(st[5])
                    if v > previous + FEATURE_THRESHOLD:
                        s_left = st[1]
                        s_right = st[3] - s_left
                        r = st[2] - c
                        estimate = s_left * s_left * reciprocal[int(c)] + s_right * s_right * reciprocal[int(r)]
                        if estimate >= st[4]:
                            proxy = s_left * s_left / c + s_right * s_right / r
                            if proxy > best[f, t, j]:
                                best[f, t, j] = proxy
                                st[4] = proxy * (1.0 - 1e-9)
                                threshold[f, t, j] = np.float64(previous) / 2.0 + np.float64(v) / 2.0
                st[0] = c + 1.0
                st[1] += neg_grad[i, t]
                st[5] = v
        for t in range(trees):
            for j in range(width):
                highest[f, t, j] = np.float32(state[t, j, 5])
    return best, threshold, lowest, highest


@numba.njit(parallel=True, cache=True)
def _root_search(sorted_x, order, neg_grad, node_count, node_sum):
    """`_split_search` for the roots, which hold every sample: the cut positions are the same for every tree."""
    n_features, n = sorted_x.shape
    trees = node_count.shape[0]
    best = np.full((n_features, trees, 1), -np.inf)
    threshold = np.zeros((n_features, trees, 1))
    lowest = np.zeros((n_features, trees, 1), dtype=np.float32)
    highest = np.zeros((n_features, trees, 1), dtype=np.float32)
    for f in numba.prange(n_features):
        run_sum = np.zeros(trees)
        screen = np.full(trees, -np.inf)
        lowest[f, :, 0] = sorted_x[f, 0]
        highest[f, :, 0] = sorted_x[f, n - 1]
        for p in range(n):
            i = order[f, p]
            v = sorted_x[f, p]
            if p > 0 and v > sorted_x[f, p - 1] + FEATURE_THRESHOLD:
                c = float(p)
                r = float(n - p)
                inv_c = 1.0 / c
                inv_r = 1.0 / r
                for t in range(trees):
                    s_left = run_sum[t]
                    s_right = node_sum[t] - s_left
                    estimate = s_left * s_left * inv_c + s_right * s_right * inv_r
                    if estimate >= screen[t]:
                        proxy = s_left * s_left / c + s_right * s_right / r
                        if proxy > best[f, t, 0]:
                            best[f, t, 0] = proxy
                            screen[t] = proxy * (1.0 - 1e-9)
                            threshold[f, t, 0] = np.float64(sorted_x[f, p - 1]) / 2.0 + np.float64(v) / 2.0
            for t in range(trees):
                run_sum[t] += neg_grad[i, t]
    return best, threshold, lowest, highest


@numba.njit(cache=True)
def _rand_int(state, t, low, high):
    """sklearn's rand_int(low, high) on its xorshift `our_rand_r` (state per tree, uint32, 0 replaced by 1)."""
    s = state[t]
    if s == 0:
        s = 1
    s ^= (s << 13) & 0xFFFFFFFF
    s ^= s >> 17
    s ^= (s << 5) & 0xFFFFFFFF
    state[t] = s
    return low + (s % 2147483648) % (high - low)


@numba.njit(cache=True)
def _feature_order(state, features, constants, n_known, searched, is_constant, visit, n_total):
    """The order in which sklearn's best splitter visits the features of one node per tree (`node_split_best`'s
    Fisher-Yates draws over the splitter's persistent `features` array, skipping known and found constant
    features). visit[t, :] gets the evaluated features in order, padded with -1; n_total[t] the node's constant
    count handed to its children."""
    trees, d = features.shape
    for t in range(trees):
        visit[t, :] = -1
        if not searched[t]:
            continue
        f_i = d
        n_visited = 0
        n_found = 0
        n_drawn = 0
        known = n_known[t]
        total = known
        count = 0
        while f_i > total and (n_visited < d or n_visited <= n_found + n_drawn):
            n_visited += 1
            f_j = _rand_int(state, t, n_drawn, f_i - n_found)
            if f_j < known:
                features[t, n_drawn], features[t, f_j] = features[t, f_j], features[t, n_drawn]
                n_drawn += 1
                continue
            f_j += n_found
            feature = features[t, f_j]
            if is_constant[t, feature]:
                features[t, f_j], features[t, total] = features[t, total], features[t, f_j]
                n_found += 1
                total += 1
                continue
            f_i -= 1
            features[t, f_i], features[t, f_j] = features[t, f_j], features[t, f_i]
            visit[t, count] = feature
            count += 1
        features[t, :known] = constants[t, :known]
        constants[t, known : known + n_found] = features[t, known : known + n_found]
        n_total[t] = total


@numba.njit(parallel=True, cache=True)
def _partition(x, node, h, split_feature, split_threshold, neg_grad, count, total, squares):
    """Move the samples of node h to its children (x <= threshold goes left) in the trees where it splits, and
    set the children's (count, sum, sum of squares) of the negative gradient, summed over samples in row order."""
    n, trees = node.shape
    left, right = 2 * h + 1, 2 * h + 2
    for t in numba.prange(trees):
        f = split_feature[t]
        if f < 0:
            continue
        c_l = s_l = q_l = c_r = s_r = q_r = 0.0
        for i in range(n):
            if node[i, t] == h:
                g = neg_grad[i, t]
                if x[i, f] <= split_threshold[t]:
                    node[i, t] = left
                    c_l += 1.0
                    s_l += g
                    q_l += g * g
                else:
                    node[i, t] = right
                    c_r += 1.0
                    s_r += g
                    q_r += g * g
        count[t, left], total[t, left], squares[t, left] = c_l, s_l, q_l
        count[t, right], total[t, right], squares[t, right] = c_r, s_r, q_r


@numba.njit(cache=True)
def _unsplit(node, h, revert):
    """Send the samples of node h's children back to h in the trees where `revert`."""
    n, trees = node.shape
    for t in range(trees):
        if revert[t]:
            for i in range(n):
                if node[i, t] == 2 * h + 1 or node[i, t] == 2 * h + 2:
                    node[i, t] = h


@numba.njit(cache=True)
def _leaf_values_and_update(neg_grad, y01, node, factor, learning_rate, raw, n_nodes):
    """sklearn's Newton step per leaf, then raw += learning_rate * value of each sample's leaf."""
    n, trees = neg_grad.shape
    values = np.zeros((trees, n_nodes))
    for t in range(trees):
        count = np.zeros(n_nodes)
        num = np.zeros(n_nodes)
        den = np.zeros(n_nodes)
        for i in range(n):
            h = node[i, t]
            g = neg_grad[i, t]
            prob = y01[i, t] - g
            count[h] += 1.0
            num[h] += g
            den[h] += prob * (1.0 - prob)
        for h in range(n_nodes):
            if count[h] > 0.0:
                numerator = num[h] / count[h] * factor[t]
                denominator = den[h] / count[h]
                values[t, h] = 0.0 if abs(denominator) < 1e-150 else numerator / denominator
        for i in range(n):
            raw[i, t] += learning_rate * values[t, node[i, t]]
    return values


@numba.njit(parallel=True, cache=True)
def _predict_raw(x, feature, threshold, value, learning_rate, raw):
    """raw[i, t] += learning_rate * value of x_i's leaf in tree t of every stage, stage after stage."""
    n = x.shape[0]
    stages, trees, _ = feature.shape
    for i in numba.prange(n):
        for s in range(stages):
            for t in range(trees):
                h = 0
                while h < feature.shape[2] and feature[s, t, h] >= 0:
                    h = 2 * h + 1 if x[i, feature[s, t, h]] <= threshold[s, t, h] else 2 * h + 2
                raw[i, t] += learning_rate * value[s, t, h]


# --- the ensembles ----------------------------------------------------------------------------------------------


PAIRS_PER_THREAD = 2_000_000  # (sample, tree, feature) visits per stage worth a thread: small fits run in one


@contextlib.contextmanager
def _threads(n_jobs: int | None, work: int | None = None):
    """numba's thread count for the duration (None: every core; negative: joblib's convention), at most one
    thread per PAIRS_PER_THREAD of `work` (a parallel region per kernel costs more than a small kernel)."""
    if n_jobs == 0:
        raise InvalidInputError("n_jobs must be a positive number of workers, a negative joblib count, or None")
    cores = numba.config.NUMBA_NUM_THREADS
    wanted = cores if n_jobs is None else (n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs))
    if work is not None:
        wanted = min(wanted, max(1, work // PAIRS_PER_THREAD))
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(wanted), cores)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def as_float32(x, name: str = "codes") -> np.ndarray:
    """Codes as sklearn's trees see them (float32, C order), refusing NaN, inf and values beyond float32."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise InvalidInputError(f"{name} must have shape [N, d], got {list(x.shape)}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InvalidInputError(f"{name} must be numeric, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise InvalidInputError(f"{name} contains NaN or inf (first at row {bad[0]}, column {bad[1]})")
    with np.errstate(over="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x32)):
        raise InvalidInputError(f"{name} holds values too large for float32 (the trees' precision)")
    return x32


class BoostedTrees:
    """Several `GradientBoostingClassifier()` ensembles fitted on the same inputs, stored side by side.

    Trees are in heap order (node h has children 2h + 1, 2h + 2): `feature[s, t, h]` (-1 at leaves),
    `threshold[s, t, h]`, `value[s, t, h]` (the leaves' Newton values) for stage s and tree column t; the
    columns of classifier c are `offsets[c]:offsets[c + 1]`.
    """

    def __init__(self, classes, offsets, init_raw, feature, threshold, value, importances, training_raw=None):
        self.training_raw = training_raw
        self.classes = classes
        self.offsets = offsets
        self.init_raw = init_raw
        self.feature = feature
        self.threshold = threshold
        self.value = value
        self.importances = importances

    def decision_function(self, x, n_jobs: int | None = None) -> np.ndarray:
        """Raw scores [N, trees] of every classifier (sklearn's decision_function, columns side by side)."""
        x = as_float32(x, "codes")
        if x.shape[1] != self.n_features:
            raise InvalidInputError(f"the codes have {x.shape[1]} dimensions, the classifiers {self.n_features}")
        raw = np.tile(self.init_raw, (x.shape[0], 1))
        with _threads(n_jobs, x.shape[0] * raw.shape[1] * self.feature.shape[0] // 10):
            _predict_raw(x, self.feature, self.threshold, self.value, LEARNING_RATE, raw)
        return raw

    @property
    def n_features(self) -> int:
        return self.importances[0].shape[0]

    def predict(self, x, n_jobs: int | None = None) -> list[np.ndarray]:
        """Predicted labels of every classifier (argmax of the raw scores; raw >= 0 for two classes)."""
        return self.labels(self.decision_function(x, n_jobs))

    def predict_training(self) -> list[np.ndarray]:
        """`predict` on the training codes, from the raw scores accumulated while fitting (the same sums)."""
        return self.labels(self.training_raw)

    def labels(self, raw: np.ndarray) -> list[np.ndarray]:
        """Raw scores [N, trees] -> predicted labels of every classifier."""
        labels = []
        for c, classes in enumerate(self.classes):
            columns = raw[:, self.offsets[c] : self.offsets[c + 1]]
            encoded = (columns[:, 0] >= 0).astype(int) if classes.size == 2 else np.argmax(columns, axis=1)
            labels.append(classes[encoded])
        return labels

    def classifier(self, c: int) -> Classifier:
        return Classifier(self, c)


class Classifier:
    """One of the fitted classifiers, with sklearn's `predict`, `classes_` and `feature_importances_`."""

    def __init__(self, ensembles: BoostedTrees, c: int):
        columns = slice(ensembles.offsets[c], ensembles.offsets[c + 1])
        self._training_raw = None if ensembles.training_raw is None else ensembles.training_raw[:, columns]
        self.classes_ = ensembles.classes[c]
        self.feature_importances_ = ensembles.importances[c]
        self._trees = BoostedTrees(
            [self.classes_],
            np.array([0, columns.stop - columns.start]),
            ensembles.init_raw[columns],
            np.ascontiguousarray(ensembles.feature[:, columns]),
            np.ascontiguousarray(ensembles.threshold[:, columns]),
            np.ascontiguousarray(ensembles.value[:, columns]),
            [self.feature_importances_],
        )

    def predict(self, x, n_jobs: int | None = None) -> np.ndarray:
        return self._trees.predict(x, n_jobs)[0]

    def predict_training(self) -> np.ndarray:
        """`predict` on the training codes, from the raw scores summed while fitting (sklearn's same sums)."""
        return self._trees.labels(self._training_raw)[0]


def _init_raw(y_encoded: np.ndarray, n_classes: int) -> np.ndarray:
    """sklearn's prior-based initial raw scores (DummyClassifier(strategy="prior") through the loss's link)."""
    prior = np.bincount(y_encoded, minlength=n_classes) / y_encoded.shape[0]
    eps = np.finfo(np.float64).eps
    prior = np.clip(prior, eps, 1 - eps)
    if n_classes == 2:
        return np.array([logit(prior[1])])
    return np.log(prior / np.exp(np.mean(np.log(prior))))


def fit(x, labels, random_states=None, n_jobs: int | None = None, n_stages: int = N_STAGES) -> BoostedTrees:
    """Fit one `GradientBoostingClassifier(random_state=r)` per label vector in `labels`, all on the codes `x`.

    x: [N, d]; each label vector [N] needs at least two classes; random_states: one per label vector (int or
    None, as sklearn's: they only break ties between equally good splits). `n_jobs`: numba threads (None: every
    core); the result does not depend on it.
    """
    if random_states is None or isinstance(random_states, (int, np.integer)):
        random_states = [random_states] * len(labels)
    if len(random_states) != len(labels):
        raise InvalidInputError(f"{len(random_states)} random states for {len(labels)} label vectors")
    x = as_float32(x, "codes")
    n, d = x.shape
    if n < 2:
        raise InvalidInputError(f"codes has {n} points; at least 2 are needed")
    classes, encoded, n_classes = [], [], []
    for k, y in enumerate(labels):
        y = np.asarray(y)
        if y.shape != (n,):
            raise InvalidInputError(f"labels {k} have shape {list(y.shape)}; expected [{n}]")
        values, codes = np.unique(y, return_inverse=True)
        if values.size < 2:
            raise InvalidInputError(
                f"labels {k} take a single value in this sample; a classifier needs at least two classes"
            )
        classes.append(values)
        encoded.append(codes)
        n_classes.append(values.size)
    n_classes = np.array(n_classes, dtype=np.int64)
    widths = np.where(n_classes == 2, 1, n_classes)
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
    trees = int(offsets[-1])
    y = np.ascontiguousarray(np.stack(encoded, axis=1), dtype=np.int64)
    init_raw = np.concatenate([_init_raw(codes, k) for codes, k in zip(encoded, n_classes)])
    factor = np.concatenate([np.full(w, 1.0 if k == 2 else (k - 1) / k) for w, k in zip(widths, n_classes)])
    order = np.ascontiguousarray(np.argsort(x, axis=0, kind="stable").T).astype(np.int64)
    sorted_x = np.ascontiguousarray(np.take_along_axis(x, order.T, axis=0).T)

    feature = np.full((n_stages, trees, N_INTERNAL), -1, dtype=np.int64)
    threshold = np.zeros((n_stages, trees, N_INTERNAL))
    value = np.zeros((n_stages, trees, N_NODES))
    importance_sum = np.zeros((trees, d))
    rngs = [check_random_state(r) for r in random_states]
    # a feature can be constant inside a node only if the node lies within a run of values each within 1e-7 of
    # the next: the longest such run bounds the nodes that need the test
    close_values = _longest_close_run(sorted_x)
    relevant = np.zeros(trees)
    raw = np.tile(init_raw, (n, 1))
    neg_grad, y01 = np.empty((n, trees)), np.empty((n, trees))
    with _threads(n_jobs, n * trees * d):
        for s in range(n_stages):
            _negative_gradient(raw, y, offsets, n_classes, neg_grad, y01)
            # sklearn: each tree draws its splitter's seed from the classifier's RandomState, stage by stage
            seeds = np.concatenate([rng.randint(0, 2147483647, size=w) for rng, w in zip(rngs, widths)])
            tree = _grow(x, sorted_x, order, neg_grad, seeds, close_values)
            feature[s], threshold[s], node, decrease = tree.feature, tree.threshold, tree.node, tree.decrease
            value[s] = _leaf_values_and_update(neg_grad, y01, node, factor, LEARNING_RATE, raw, N_NODES)
            split = feature[s, :, 0] >= 0
            relevant += split
            for h in range(N_INTERNAL):
                has = feature[s, :, h] >= 0
                np.add.at(importance_sum, (np.nonzero(has)[0], feature[s, has, h]), decrease[has, h] / n)
    importances = []
    for c in range(len(labels)):
        columns = slice(offsets[c], offsets[c + 1])
        count = relevant[columns].sum()
        if count == 0:
            importances.append(np.zeros(d))
            continue
        mean = importance_sum[columns].sum(axis=0) / count
        importances.append(mean / mean.sum())
    return BoostedTrees(classes, offsets, init_raw, feature, threshold, value, importances, raw)


def _longest_close_run(sorted_x) -> int:
    """The most samples in a run of sorted values each within sklearn's FEATURE_THRESHOLD of the next."""
    close = sorted_x[:, 1:] <= sorted_x[:, :-1] + FEATURE_THRESHOLD
    longest = 1
    for row in close:
        if row.any():
            edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
            longest = max(longest, int((np.nonzero(edges == -1)[0] - np.nonzero(edges == 1)[0]).max()) + 1)
    return longest


class _Tree:
    """The trees of one stage (one per column of `neg_grad`) while they grow, with sklearn's splitter state."""

    def __init__(self, x, sorted_x, order, neg_grad, seeds, close_values):
        n, trees = neg_grad.shape
        d = x.shape[1]
        self.x, self.sorted_x, self.order, self.neg_grad, self.close_values = x, sorted_x, order, neg_grad, close_values
        self.node = np.zeros((n, trees), dtype=np.int8)
        self.count, self.total, self.squares = _node_sums(neg_grad, self.node, N_NODES)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.impurity = self.squares / self.count - (self.total / self.count) ** 2.0  # root: node_impurity
        self.feature = np.full((trees, N_INTERNAL), -1, dtype=np.int64)
        self.threshold = np.zeros((trees, N_INTERNAL))
        self.decrease = np.zeros((trees, N_INTERNAL))
        self.n_constant = np.zeros((trees, N_NODES), dtype=np.int64)
        self.visit = np.full((trees, N_INTERNAL, d), -1, dtype=np.int64)
        self.state = seeds.astype(np.int64).copy()
        self.features = np.tile(np.arange(d, dtype=np.int64), (trees, 1))
        self.constants = np.zeros((trees, d), dtype=np.int64)
        self.best = {}  # heap index -> (per-feature best proxy [d, trees], threshold [d, trees])

    def searched(self, h: int) -> np.ndarray:
        """sklearn calls node_split on node h: not too small, not pure (depth checked by the caller)."""
        return (self.count[:, h] >= 2) & (self.impurity[:, h] > EPSILON)

    def search(self, first: int, width: int) -> np.ndarray:
        """Per-feature best cuts of the nodes first..first+width-1; returns which features are constant there."""
        level = slice(first, first + width)
        searched = np.stack([self.searched(h) for h in range(first, first + width)], axis=1)
        if first == 0:
            best, cut, lowest, highest = _root_search(
                self.sorted_x, self.order, self.neg_grad, self.count[:, 0].copy(), self.total[:, 0].copy()
            )
        else:
            local = _local_nodes(self.node, first, searched)
            count, total = self.count[:, level].copy(), self.total[:, level].copy()
            best, cut, lowest, highest = _split_search(self.sorted_x, self.order, self.neg_grad, local, count, total)
        for j in range(width):
            self.best[first + j] = (best[:, :, j], cut[:, :, j])
        return (highest <= lowest + FEATURE_THRESHOLD).transpose(1, 2, 0)  # [trees, width, d]

    def draw(self, h: int, is_constant: np.ndarray) -> None:
        """sklearn's feature visiting order at node h (consumes the trees' random draws in depth-first order)."""
        n_total = np.zeros(self.state.shape[0], dtype=np.int64)
        parent = (h - 1) // 2 if h > 0 else 0
        known = self.n_constant[:, parent] if h > 0 else np.zeros_like(n_total)
        _feature_order(
            self.state, self.features, self.constants, known, self.searched(h), is_constant, self.visit[:, h], n_total
        )
        self.n_constant[:, h] = n_total

    def constant_features(self, first: int, width: int) -> np.ndarray:
        """[trees, width, d]: features constant in nodes first.. (searched only when a node is small enough to lie
        within a run of values closer than 1e-7 of some feature)."""
        count = self.count[:, first : first + width]
        small = (count >= 2) & (count <= self.close_values)
        if not small.any():
            return np.zeros((self.count.shape[0], width, self.x.shape[1]), dtype=bool)
        return self.search(first, width)

    def split(self, h: int) -> None:
        """Choose node h's split (first best in visiting order), move its samples, record sklearn's statistics."""
        best, cut = self.best[h]
        trees = best.shape[1]
        winner = np.full(trees, -1, dtype=np.int64)
        top = np.full(trees, -np.inf)
        for r in range(self.visit.shape[2]):
            f = self.visit[:, h, r]
            ok = f >= 0
            proxy = np.where(ok, best[np.maximum(f, 0), np.arange(trees)], -np.inf)
            better = ok & (proxy > top)
            winner = np.where(better, f, winner)
            top = np.where(better, proxy, top)
        split_threshold = np.where(winner >= 0, cut[np.maximum(winner, 0), np.arange(trees)], 0.0)
        before = self.count[:, h].copy(), self.total[:, h].copy(), self.squares[:, h].copy()
        _partition(self.x, self.node, h, winner, split_threshold, self.neg_grad, self.count, self.total, self.squares)
        left, right = 2 * h + 1, 2 * h + 2
        n_t, n_l = before[0], self.count[:, left]
        n_r = n_t - n_l
        s_l, q_l = self.total[:, left], self.squares[:, left]
        s_r, q_r = before[1] - s_l, before[2] - q_l  # sklearn: right = parent - left
        n = self.node.shape[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            imp_l = q_l / n_l - (s_l / n_l) ** 2.0
            imp_r = q_r / n_r - (s_r / n_r) ** 2.0
            imp_t = self.impurity[:, h]
            improvement = (n_t / n) * (imp_t - n_r / n_t * imp_r - n_l / n_t * imp_l)
        is_split = winner >= 0
        revert = is_split & (improvement + EPSILON < 0.0)
        if revert.any():
            _unsplit(self.node, h, revert)
            is_split &= ~revert
            for child in (left, right):
                self.count[revert, child] = self.total[revert, child] = self.squares[revert, child] = 0.0
        self.feature[:, h] = np.where(is_split, winner, -1)
        self.threshold[:, h] = np.where(is_split, split_threshold, 0.0)
        self.decrease[:, h] = np.where(is_split, n_t * imp_t - n_l * imp_l - n_r * imp_r, 0.0)
        self.impurity[:, left] = np.where(is_split, imp_l, np.nan)
        self.impurity[:, right] = np.where(is_split, imp_r, np.nan)
        self.n_constant[:, left] = self.n_constant[:, h]
        self.n_constant[:, right] = self.n_constant[:, h]


def _grow(x, sorted_x, order, neg_grad, seeds, close_values):
    """Grow one depth-3 regression tree per column of `neg_grad` as sklearn's depth-first builder does.

    Nodes are searched level by level (all trees at once) but their random feature orders are drawn in sklearn's
    depth-first order: root, 1, 3, 4, 2, 5, 6 (nodes 3 and 4 draw before node 2 is split).
    Returns the tree state: feature/threshold [trees, 7], each sample's leaf [N, trees] and the impurity decrease
    n_t imp_t - n_l imp_l - n_r imp_r of every split node [trees, 7].
    """
    tree = _Tree(x, sorted_x, order, neg_grad, seeds, close_values)
    tree.draw(0, tree.search(0, 1)[:, 0])
    tree.split(0)
    constant = tree.search(1, 2)
    tree.draw(1, constant[:, 0])
    tree.split(1)
    left_children = tree.constant_features(3, 2)
    tree.draw(3, left_children[:, 0])
    tree.draw(4, left_children[:, 1])
    tree.draw(2, constant[:, 1])
    tree.split(2)
    constant = tree.search(3, 4)
    tree.draw(5, constant[:, 2])
    tree.draw(6, constant[:, 3])
    for h in range(3, 7):
        tree.split(h)
    return tree
