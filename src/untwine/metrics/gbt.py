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

How (numba, CPU only): each feature is sorted once per fit (a stable argsort: tied values in row order). Each tree
is grown start to end by one thread, its nodes' samples kept in every feature's sorted order (a split partitions
its node's lists stably into its children's; sklearn's unstable sort may order tied values otherwise, which changes
only the order they are summed in), so a node's search is one sequential pass per feature with the running sum in a
register. Cuts are ranked on division-free estimates, the exact proxies computed only for near ties, so every
decision is the one sklearn's floating-point comparisons make: the ensembles are bitwise those of a plain search.
Trees of a stage are spread over threads; no result depends on their number. At the benchmark's size (10,000 x 10
codes, 113 trees per stage, 1 thread) a tree takes ~0.8 ms (root 0.13, depth-1 and depth-2 searches 0.15 each, the
two partitions 0.17 each), the negative gradient (libm's exp, as sklearn's) ~0.1 ms per tree: ~11 CPU-s for the 100
stages. (A torch version of the search, as tensor passes of gathers, cumulative sums and masked maxima, took 29x
the CPU-seconds at the root alone.) The codes are NumPy arrays on the CPU whatever device the model ran on.
"""

from __future__ import annotations

import collections
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
NEAR_TIE = 1e-12  # cut estimates closer than this (relative) are compared on their exact proxies
PREDICT_BLOCK = 64  # samples taken through each tree together when predicting
ESTIMATORS = ("untwine", "sklearn")


# --- compiled kernels -------------------------------------------------------------------------------------------
# Layout: per-tree arrays are rows ([trees, N]); each tree of a stage is grown start to end by one thread
# (`_grow`), so no result depends on the number of threads.


@numba.njit(cache=True)
def _negative_gradient(raw, y, offsets, n_classes, i, neg_grad):
    """neg_grad[t, i] = -(dloss / draw[t, i]) of sample i for every tree column t of every classifier."""
    for c in range(n_classes.shape[0]):
        o = offsets[c]
        if n_classes[c] == 2:  # half-binomial, as sklearn's cgradient_half_binomial
            yt = float(y[c, i])
            r = raw[o, i]
            if r > -37.0:
                e = np.exp(-r)
                grad = ((1.0 - yt) - yt * e) / (1.0 + e)
            else:
                grad = np.exp(r) - yt
            neg_grad[o, i] = -grad
        else:  # half-multinomial: softmax with the max subtracted
            k_count = n_classes[c]
            m = raw[o, i]
            for k in range(1, k_count):
                if m < raw[o + k, i]:
                    m = raw[o + k, i]
            total = 0.0
            for k in range(k_count):
                neg_grad[o + k, i] = np.exp(raw[o + k, i] - m)
                total += neg_grad[o + k, i]
            for k in range(k_count):
                p = neg_grad[o + k, i] / total
                target = 1.0 if y[c, i] == k else 0.0
                neg_grad[o + k, i] = -(p - target)


@numba.njit(cache=True)
def _proxy(s_left, c, node_count, node_sum):
    """sklearn's proxy of the impurity improvement, sum_l^2 / n_l + sum_r^2 / n_r with sum_r = sum - sum_l."""
    n_left = float(c)
    s_right = node_sum - s_left
    return s_left * s_left / n_left + s_right * s_right / (node_count - n_left)


@numba.njit(cache=True)
def _best_cut(x_f, index, a, b, g, node_count, node_sum, reciprocal):
    """Best cut of one node along one feature: the node's samples are index[a:b] in the feature's sorted order,
    x_f their values, g their negative gradients. Returns (proxy, threshold); proxy -inf where no cut exists.

    As sklearn's best splitter: the left sum runs over the samples in sorted order; a cut below a sample needs its
    value above the previous one + 1e-7 (float32); the first cut of largest proxy wins (strict >); threshold
    a / 2 + b / 2 in float64. Division-free screening: cuts are ranked on estimates sum_l^2 (1 / n_l) + sum_r^2
    (1 / n_r) (reciprocals from a table; relative error < 1e-15 of the proxy); the exact proxies are computed
    only when an estimate lies within NEAR_TIE of the winner's, so every decision is the exact proxies' one.
    """
    size = numba.uint64(b - a)  # unsigned indices: no negative-index wraparound in the loop
    start = numba.uint64(a)
    above = below = -np.inf  # the winner's estimate times (1 + NEAR_TIE) and (1 - NEAR_TIE)
    exact = np.nan  # the winner's proxy once computed
    win_c = numba.uint64(0)  # the winner's left count (0: no cut yet), left sum and threshold
    win_s = win_cut = 0.0
    s_left = 0.0
    last = x_f[numba.uint64(index[start])]
    for c in range(size):
        c = numba.uint64(c)
        i = numba.uint64(index[start + c])
        v = x_f[i]
        if v > last + FEATURE_THRESHOLD:
            s_right = node_sum - s_left
            estimate = s_left * s_left * reciprocal[c] + s_right * s_right * reciprocal[size - c]
            if estimate > below:
                better = estimate > above
                if not better:  # a near tie: decided on the exact proxies
                    if exact != exact:
                        exact = _proxy(win_s, win_c, node_count, node_sum)
                    proxy = _proxy(s_left, c, node_count, node_sum)
                    better = proxy > exact
                    if better:
                        exact = proxy
                else:
                    exact = np.nan
                if better:
                    above = estimate * (1.0 + NEAR_TIE)
                    below = estimate * (1.0 - NEAR_TIE)
                    win_c, win_s = c, s_left
                    win_cut = np.float64(last) / 2.0 + np.float64(v) / 2.0
        s_left += g[i]
        last = v
    if win_c == 0:
        return -np.inf, 0.0
    if exact != exact:
        exact = _proxy(win_s, win_c, node_count, node_sum)
    return exact, win_cut


@numba.njit(cache=True)
def _rand_int(state, low, high):
    """sklearn's rand_int(low, high) on its xorshift `our_rand_r` (state[0]: uint32, 0 replaced by 1)."""
    s = state[0]
    if s == 0:
        s = 1
    s ^= (s << 13) & 0xFFFFFFFF
    s ^= s >> 17
    s ^= (s << 5) & 0xFFFFFFFF
    state[0] = s
    return low + (s % 2147483648) % (high - low)


@numba.njit(cache=True)
def _feature_order(state, features, constants, known, is_constant, visit):
    """The order in which sklearn's best splitter visits the features of one node (`node_split_best`'s
    Fisher-Yates draws over the splitter's persistent `features` array, skipping known and found constant
    features). visit gets the evaluated features in order, padded with -1; returns the node's constant count
    handed to its children."""
    d = features.shape[0]
    visit[:] = -1
    f_i = d
    n_visited = 0
    n_found = 0
    n_drawn = 0
    total = known
    count = 0
    while f_i > total and (n_visited < d or n_visited <= n_found + n_drawn):
        n_visited += 1
        f_j = _rand_int(state, n_drawn, f_i - n_found)
        if f_j < known:
            features[n_drawn], features[f_j] = features[f_j], features[n_drawn]
            n_drawn += 1
            continue
        f_j += n_found
        feature = features[f_j]
        if is_constant[feature]:
            features[f_j], features[total] = features[total], features[f_j]
            n_found += 1
            total += 1
            continue
        f_i -= 1
        features[f_i], features[f_j] = features[f_j], features[f_i]
        visit[count] = feature
        count += 1
    features[:known] = constants[:known]
    constants[known : known + n_found] = features[known : known + n_found]
    return total


# One growing tree's nodes in heap order (children of h: 2h + 1, 2h + 2): the gradient's count, sum and sum of
# squares (row order), impurity, sklearn's constant-feature count, the node's samples at start:stop (of `members`,
# in row order, and of each feature's sorted list); per internal node and feature the best proxy, cut and
# constancy; the feature visiting order; the split (feature -1 at leaves), threshold and impurity decrease
# n_t imp_t - n_l imp_l - n_r imp_r.
_Nodes = collections.namedtuple(
    "_Nodes",
    "count total squares impurity n_constant start stop best cut constant visit feature threshold decrease",
)


@numba.njit(cache=True)
def _new_nodes(d):
    return _Nodes(
        np.zeros(N_NODES),
        np.zeros(N_NODES),
        np.zeros(N_NODES),
        np.zeros(N_NODES),
        np.zeros(N_NODES, dtype=np.int64),
        np.zeros(N_NODES, dtype=np.int64),
        np.zeros(N_NODES, dtype=np.int64),
        np.zeros((N_INTERNAL, d)),
        np.zeros((N_INTERNAL, d)),
        np.zeros((N_INTERNAL, d), dtype=np.bool_),
        np.zeros((N_INTERNAL, d), dtype=np.int64),
        np.zeros(N_INTERNAL, dtype=np.int64),
        np.zeros(N_INTERNAL),
        np.zeros(N_INTERNAL),
    )


@numba.njit(cache=True)
def _searched(tree, h):
    """sklearn calls node_split on node h (depth < 3): at least 2 samples, impurity above eps."""
    return tree.count[h] >= 2.0 and tree.impurity[h] > EPSILON


@numba.njit(cache=True)
def _search(tree, h, lists, x_t, g, reciprocal):
    """Every feature's best cut at node h (lists[f, start:stop]: its samples in f's sorted order), and which
    features are constant there (sklearn's max <= min + 1e-7)."""
    a, b = tree.start[h], tree.stop[h]
    for f in range(x_t.shape[0]):
        x_f, index = x_t[f], lists[f]
        tree.best[h, f], tree.cut[h, f] = _best_cut(x_f, index, a, b, g, tree.count[h], tree.total[h], reciprocal)
        tree.constant[h, f] = tree.best[h, f] == -np.inf and x_f[index[b - 1]] <= x_f[index[a]] + FEATURE_THRESHOLD


@numba.njit(cache=True)
def _partition(source, target, a, b, node_of, left, aside):
    """target[f, a:b] = source[f, a:b] with the samples of node `left` first, each part in source's order
    (sklearn's presorted lists of the two children)."""
    for f in range(source.shape[0]):
        from_, to = source[f], target[f]
        n_left = numba.uint64(a)  # unsigned: no negative-index wraparound
        n_right = numba.uint64(0)
        for k in range(a, b):  # branch-free: every sample is written on both sides, the wrong one overwritten
            i = from_[k]
            right = numba.uint64(node_of[i] != left)
            to[n_left] = i
            aside[n_right] = i
            n_left += numba.uint64(1) - right
            n_right += right
        for k in range(n_right):
            to[n_left + k] = aside[k]


@numba.njit(cache=True)
def _split(h, tree, x_t, g, members, aside, node_of):
    """Split node h on the first best cut in its visiting order (x <= threshold goes left), unless no cut exists
    or the weighted impurity decrease + eps < 0 (sklearn's leaf rules). The node's samples members[start:stop]
    (row order) are partitioned stably; the children's count, sum and sum of squares are summed in row order, their
    impurities from the parent's sums minus the left child's (sklearn's sum_right). Returns whether h split."""
    winner = -1
    top = -np.inf
    for r in range(tree.visit.shape[1]):
        f = tree.visit[h, r]
        if f < 0:
            break
        if tree.best[h, f] > top:
            winner = f
            top = tree.best[h, f]
    if winner < 0:
        return False
    cut_value = tree.cut[h, winner]
    left, right = 2 * h + 1, 2 * h + 2
    a, b = tree.start[h], tree.stop[h]
    c_l = s_l = q_l = c_r = s_r = q_r = 0.0
    n_left = n_right = 0
    for k in range(a, b):  # left ones forward, right ones aside
        i = members[k]
        v = g[i]
        if x_t[winner, i] <= cut_value:
            members[a + n_left] = i
            n_left += 1
            node_of[i] = left
            c_l += 1.0
            s_l += v
            q_l += v * v
        else:
            aside[n_right] = i
            n_right += 1
            node_of[i] = right
            c_r += 1.0
            s_r += v
            q_r += v * v
    members[a + n_left : b] = aside[:n_right]
    n = node_of.shape[0]
    n_t = tree.count[h]
    n_r = n_t - c_l
    mean_l = s_l / c_l
    mean_r = (tree.total[h] - s_l) / n_r
    imp_l = q_l / c_l - mean_l * mean_l
    imp_r = (tree.squares[h] - q_l) / n_r - mean_r * mean_r
    imp_t = tree.impurity[h]
    improvement = (n_t / n) * (imp_t - n_r / n_t * imp_r - c_l / n_t * imp_l)
    if improvement + EPSILON < 0.0:
        for k in range(a, b):
            node_of[members[k]] = h
        return False
    tree.count[left], tree.total[left], tree.squares[left] = c_l, s_l, q_l
    tree.count[right], tree.total[right], tree.squares[right] = c_r, s_r, q_r
    tree.start[left], tree.stop[left], tree.start[right], tree.stop[right] = a, a + n_left, a + n_left, b
    tree.feature[h] = winner
    tree.threshold[h] = cut_value
    tree.decrease[h] = n_t * imp_t - c_l * imp_l - n_r * imp_r
    tree.impurity[left] = imp_l
    tree.impurity[right] = imp_r
    tree.n_constant[left] = tree.n_constant[h]
    tree.n_constant[right] = tree.n_constant[h]
    return True


@numba.njit(cache=True)
def _draw(tree, h, state, features, constants):
    """Node h's feature visiting order, if sklearn searches it (its draws come in depth-first order)."""
    if _searched(tree, h):
        parent = (h - 1) // 2
        known = tree.n_constant[parent] if h > 0 else 0
        tree.n_constant[h] = _feature_order(state, features, constants, known, tree.constant[h], tree.visit[h])


@numba.njit(cache=True)
def _grow(x_t, order, reciprocal, g, seed, tree, members, aside, lists, node_of):
    """Grow one depth-3 regression tree on the negative gradient g [N] as sklearn's depth-first builder does,
    leaving each sample's leaf (heap index) in node_of.

    Each node's samples are kept in every feature's sorted order (the root's is `order`; a split partitions its
    node's lists stably into the children's, lists[0] for depth 1, lists[1] for depth 2), so every search is one
    sequential pass. Random feature orders are drawn in sklearn's depth-first order: root, 1, 3, 4, 2, 5, 6.
    """
    d, n = order.shape
    tree.count[:] = 0.0
    tree.total[:] = 0.0
    tree.squares[:] = 0.0
    tree.impurity[:] = np.nan
    tree.n_constant[:] = 0
    tree.visit[:] = -1
    tree.feature[:] = -1
    tree.threshold[:] = 0.0
    tree.decrease[:] = 0.0
    state = np.array([seed], dtype=np.int64)
    features = np.arange(d)
    constants = np.zeros(d, dtype=np.int64)
    c0 = s0 = q0 = 0.0
    for i in range(n):
        members[i] = i
        node_of[i] = 0
        c0 += 1.0
        s0 += g[i]
        q0 += g[i] * g[i]
    tree.count[0], tree.total[0], tree.squares[0] = c0, s0, q0
    mean = s0 / c0
    tree.impurity[0] = q0 / c0 - mean * mean
    tree.start[0], tree.stop[0] = 0, n
    if _searched(tree, 0):
        _search(tree, 0, order, x_t, g, reciprocal)
    _draw(tree, 0, state, features, constants)
    if not _split(0, tree, x_t, g, members, aside, node_of):
        return
    _partition(order, lists[0], 0, n, node_of, 1, aside)
    for h in (1, 2):
        if _searched(tree, h):
            _search(tree, h, lists[0], x_t, g, reciprocal)
    for node in (1, 2):  # depth 1, each node's children searched right after its split (the draws' order)
        _draw(tree, node, state, features, constants)
        if _split(node, tree, x_t, g, members, aside, node_of):
            left = 2 * node + 1
            _partition(lists[0], lists[1], tree.start[node], tree.stop[node], node_of, left, aside)
            for h in (left, left + 1):
                if _searched(tree, h):
                    _search(tree, h, lists[1], x_t, g, reciprocal)
                _draw(tree, h, state, features, constants)
    for h in range(3, 7):
        _split(h, tree, x_t, g, members, aside, node_of)


@numba.njit(cache=True)
def _leaf_values_and_update(g, target, k, factor, node_of, values, raw):
    """sklearn's Newton step per leaf (samples summed in row order), then raw += learning rate * the value of
    each sample's leaf. target: the classifier's encoded labels (the tree's 0/1 target is target == k)."""
    n = g.shape[0]
    count = np.zeros(N_NODES)
    num = np.zeros(N_NODES)
    den = np.zeros(N_NODES)
    for i in range(n):
        h = node_of[i]
        y01 = 1.0 if target[i] == k else 0.0
        prob = y01 - g[i]
        count[h] += 1.0
        num[h] += g[i]
        den[h] += prob * (1.0 - prob)
    values[:] = 0.0
    for h in range(N_NODES):
        if count[h] > 0.0:
            numerator = num[h] / count[h] * factor
            denominator = den[h] / count[h]
            values[h] = 0.0 if abs(denominator) < 1e-150 else numerator / denominator
    for i in range(n):
        raw[i] += LEARNING_RATE * values[node_of[i]]


@numba.njit(parallel=True, cache=True)
def _boost(x_t, order, y, offsets, n_classes, tree_classifier, tree_class, factor, seeds, n_workers, raw, feature,
           threshold, value, importance_sum, relevant):  # fmt: skip
    """Every stage of every classifier: the negative gradient (samples in parallel), then each tree grown, given
    its leaf values and added to the raw scores by one worker (trees in parallel, tree t by worker t % n_workers);
    importances summed per tree as sklearn does (decrease / N per split, stage by stage, nodes in heap order)."""
    trees, n = raw.shape
    d = x_t.shape[0]
    neg_grad = np.empty((trees, n))
    reciprocal = np.zeros(n + 1)  # 1 / count ([0] never used)
    for c in range(1, n + 1):
        reciprocal[c] = 1.0 / c
    members = np.empty((n_workers, n), dtype=np.int32)
    aside = np.empty((n_workers, n), dtype=np.int32)
    lists = np.empty((n_workers, 2, d, n), dtype=np.int32)
    node_of = np.empty((n_workers, n), dtype=np.int8)
    for s in range(seeds.shape[0]):
        for i in numba.prange(n):
            _negative_gradient(raw, y, offsets, n_classes, i, neg_grad)
        for w in numba.prange(n_workers):
            tree = _new_nodes(d)
            for t in range(w, trees, n_workers):
                _grow(x_t, order, reciprocal, neg_grad[t], seeds[s, t], tree, members[w], aside[w], lists[w],
                      node_of[w])  # fmt: skip
                feature[s, t] = tree.feature
                threshold[s, t] = tree.threshold
                c = tree_classifier[t]
                _leaf_values_and_update(neg_grad[t], y[c], tree_class[t], factor[t], node_of[w], value[s, t], raw[t])
                if tree.feature[0] >= 0:
                    relevant[t] += 1.0
                for h in range(N_INTERNAL):
                    if tree.feature[h] >= 0:
                        importance_sum[t, tree.feature[h]] += tree.decrease[h] / n


@numba.njit(cache=True)
def _complete_trees(feature, threshold, value):
    """The trees as complete depth-3 trees with the same predictions: a leaf above depth 3 becomes a node sending
    every sample left (feature 0, threshold +inf) down to a depth-3 leaf holding its value. Returns (feature,
    threshold) of the 7 internal nodes and the values of the 8 depth-3 leaves."""
    stages, trees, internal = feature.shape
    full_feature = np.zeros_like(feature)
    full_threshold = np.full(threshold.shape, np.inf)
    leaf_value = np.zeros((stages, trees, internal + 1))
    for s in range(stages):
        for t in range(trees):
            for h in range(N_NODES):
                reached = h == 0 or feature[s, t, (h - 1) // 2] >= 0
                if not reached:
                    continue
                if h < internal and feature[s, t, h] >= 0:
                    full_feature[s, t, h] = feature[s, t, h]
                    full_threshold[s, t, h] = threshold[s, t, h]
                    continue
                leftmost = h
                while leftmost < internal:
                    leftmost = 2 * leftmost + 1
                leaf_value[s, t, leftmost - internal] = value[s, t, h]
    return full_feature, full_threshold, leaf_value


@numba.njit(parallel=True, cache=True)
def _predict_raw(x, feature, threshold, value, learning_rate, raw):
    """raw[i, t] += learning_rate * value of x_i's leaf in tree t of every stage, stage after stage. The trees
    made complete (`_complete_trees`), every descent takes MAX_DEPTH branch-free steps; blocks of PREDICT_BLOCK
    samples go through each tree together (their descents overlap), blocks in parallel."""
    full_feature, full_threshold, leaf_value = _complete_trees(feature, threshold, value)
    n = x.shape[0]
    stages, trees, internal = feature.shape
    for block in numba.prange((n + PREDICT_BLOCK - 1) // PREDICT_BLOCK):
        for s in range(stages):
            for t in range(trees):
                for i in range(block * PREDICT_BLOCK, min(n, (block + 1) * PREDICT_BLOCK)):
                    h = 0
                    for _ in range(MAX_DEPTH):  # x <= threshold: left
                        h = 2 * h + 2 - int(x[i, full_feature[s, t, h]] <= full_threshold[s, t, h])
                    raw[i, t] += learning_rate * leaf_value[s, t, h - internal]


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
    y = np.ascontiguousarray(np.stack(encoded, axis=0), dtype=np.int64)  # [classifiers, N]
    init_raw = np.concatenate([_init_raw(codes, k) for codes, k in zip(encoded, n_classes)])
    factor = np.concatenate([np.full(w, 1.0 if k == 2 else (k - 1) / k) for w, k in zip(widths, n_classes)])
    tree_classifier = np.repeat(np.arange(len(labels)), widths).astype(np.int64)
    # the class each tree separates (0/1 target: label == class); one tree, of class 1, for two classes
    tree_class = np.concatenate([np.ones(1) if k == 2 else np.arange(k) for k in n_classes]).astype(np.int64)
    order = np.ascontiguousarray(np.argsort(x, axis=0, kind="stable").T, dtype=np.int32)  # [d, N]
    # sklearn: each tree draws its splitter's seed from the classifier's RandomState, stage by stage
    rngs = [check_random_state(r) for r in random_states]
    seeds = np.array(
        [np.concatenate([rng.randint(0, 2147483647, size=w) for rng, w in zip(rngs, widths)]) for _ in range(n_stages)]
    ).reshape(n_stages, trees)

    feature = np.full((n_stages, trees, N_INTERNAL), -1, dtype=np.int64)
    threshold = np.zeros((n_stages, trees, N_INTERNAL))
    value = np.zeros((n_stages, trees, N_NODES))
    importance_sum = np.zeros((trees, d))
    relevant = np.zeros(trees)
    raw = np.ascontiguousarray(np.repeat(init_raw[:, None], n, axis=1))  # [trees, N]
    with _threads(n_jobs, n * trees * d):
        _boost(
            np.ascontiguousarray(x.T), order, y, offsets, n_classes, tree_classifier, tree_class, factor,
            seeds.astype(np.int64), min(numba.get_num_threads(), trees), raw, feature, threshold, value,
            importance_sum, relevant,
        )  # fmt: skip
    importances = []
    for c in range(len(labels)):
        columns = slice(offsets[c], offsets[c + 1])
        count = relevant[columns].sum()
        if count == 0:
            importances.append(np.zeros(d))
            continue
        mean = importance_sum[columns].sum(axis=0) / count
        importances.append(mean / mean.sum())
    return BoostedTrees(classes, offsets, init_raw, feature, threshold, value, importances, np.ascontiguousarray(raw.T))
