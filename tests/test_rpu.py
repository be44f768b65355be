"""rPU-VAE's labelling, data-set reduction and surrogate labels (selection/rpu_reduction.py, surrogate_labels.py;
model-selection-methods.md §1.4a, §1.4c, §1.5 B-C). Expected values are derived by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from untwine.errors import InvalidInputError
from untwine.nn import GaussianVAE
from untwine.selection.rpu_reduction import (
    code_kl,
    gap_peaks,
    gaussian_kl,
    intersections,
    label_dataset,
    labelling_from_encodings,
    latent_kl,
    reduce_dataset,
)
from untwine.selection.surrogate_labels import (
    LeafRunLabels,
    SurrogateLevel,
    leaf_run_labels,
    surrogate_mig,
    surrogate_mig_from_codes,
)

# --- labelling: the two KL estimates ---------------------------------------------------------------------------------


def test_code_kl_overstates_an_active_latent_as_the_spec_says():
    means, log_sigma = np.zeros((10, 1)), np.full((10, 1), -3.0)
    # code: m = |-3| used as a log-variance: 0.5 (e^3 - 3 - 1) = 8.04; correct: 0.5 (e^-6 + 6 - 1) = 2.50
    assert code_kl(means, log_sigma)[0] == pytest.approx(0.5 * (math.exp(3) - 4))
    assert gaussian_kl(means, log_sigma)[0] == pytest.approx(0.5 * (math.exp(-6) + 5))
    assert code_kl(means, log_sigma)[0] == pytest.approx(8.04, abs=0.01)
    assert gaussian_kl(means, log_sigma)[0] == pytest.approx(2.50, abs=0.01)


def test_code_kl_averages_log_sigma_over_the_batch_before_using_it():
    # half the batch at log sigma -3, half at +3: the batch mean is 0, so the code reads the latent as collapsed
    log_sigma = np.array([[-3.0]] * 16 + [[3.0]] * 16)
    means = np.zeros_like(log_sigma)
    assert code_kl(means, log_sigma)[0] == 0.0
    correct = 0.5 * ((math.exp(-6) + 6 - 1) + (math.exp(6) - 6 - 1)) / 2
    assert gaussian_kl(means, log_sigma)[0] == pytest.approx(correct)


def test_latent_kl_is_an_unweighted_mean_over_batches_of_32():
    # 33 rows: batch 1 = 32 rows (mu 0, log sigma 0: KL 0), batch 2 = 1 row (mu 2: KL 0.5 * 4 = 2)
    means = np.zeros((33, 1))
    means[32] = 2.0
    log_sigma = np.zeros((33, 1))
    assert latent_kl(means, log_sigma, "code")[0] == pytest.approx(1.0)  # (0 + 2) / 2 batches
    assert latent_kl(means, log_sigma, "correct")[0] == pytest.approx(2.0 / 33)  # per image
    with pytest.raises(InvalidInputError, match="unknown KL estimate"):
        latent_kl(means, log_sigma, "exact")


def test_active_latents_have_kl_above_one():
    means = np.zeros((40, 3))
    log_sigma = np.zeros((40, 3))
    log_sigma[:, 1] = -1.5  # code: 0.5 (e^1.5 - 2.5) = 0.99 (inactive); correct: 0.5 (e^-3 + 2) = 1.02 (active)
    means[:, 2] = np.linspace(-3, 3, 40)  # KL 0.5 mean(mu^2) > 1 in both
    code = labelling_from_encodings(means, log_sigma, "code")
    correct = labelling_from_encodings(means, log_sigma, "correct")
    assert code.active.tolist() == [2] and correct.active.tolist() == [1, 2]
    assert np.array_equal(code.labels, means[:, [2]])
    assert labelling_from_encodings(np.zeros((5, 2)), np.zeros((5, 2))).labels is None


def test_label_dataset_encodes_in_eval_mode_and_restores_the_mode():
    """A real rpu_conv model whose head gives fixed (mean, log sigma): the labelling reads them back."""
    model = GaussianVAE((1, 64, 64), 4, "rpu_conv", torch.Generator().manual_seed(0)).train()
    with torch.no_grad():
        model.encoder.head.weight.zero_()
        # (mean, log sigma) per latent: (2, 0) -> code KL 2; (0, -3) -> 8.04; (0.5, 0) -> 0.125; (0, -1.5) -> 0.99
        model.encoder.head.bias.copy_(torch.tensor([2.0, 0.0, 0.0, -3.0, 0.5, 0.0, 0.0, -1.5]))
    images = torch.randint(0, 256, (40, 1, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    running = model.encoder.features[1].running_mean.clone()
    labelling = label_dataset(model, images)
    assert model.training  # restored
    assert torch.equal(model.encoder.features[1].running_mean, running)  # eval mode: no statistics updated
    assert labelling.kl == pytest.approx([2.0, 0.5 * (math.exp(3) - 4), 0.125, 0.5 * (math.exp(1.5) - 2.5)])
    assert labelling.active.tolist() == [0, 1]
    assert labelling.labels.shape == (40, 2) and np.all(labelling.labels[:, 0] == 2.0)
    assert label_dataset(model, images, "correct").active.tolist() == [0, 1, 3]


# --- the peak search -------------------------------------------------------------------------------------------------


def three_clusters(seed=0, per=1000):
    rng = np.random.default_rng(seed)
    return np.concatenate([c + rng.normal(0, 0.1, per) for c in (0.0, 5.0, 10.0)])


def test_three_clusters_give_exactly_two_peaks_at_the_boundaries():
    for seed in range(3):
        found = gap_peaks(three_clusters(seed))
        # 3000 sorted values: the boundaries are the gaps between sorted positions 999|1000 and 1999|2000
        assert found.peaks.tolist() == [999, 1999]
        assert found.edge == 2999 // 15 == 199 and found.min_distance == 2999 // 50 == 59


def test_a_32_level_latent_gives_27_peaks_after_the_edge_and_distance_rules():
    values = np.repeat(np.arange(32.0), 600) + np.random.default_rng(1).uniform(-0.1, 0.1, 19_200)
    found = gap_peaks(values)
    # 31 boundaries at sorted gaps 600k - 1; edge = 19199 // 15 = 1279 keeps k = 3..29 (1799 .. 17399 < 17920)
    assert found.peaks.tolist() == [600 * k - 1 for k in range(3, 30)]


def test_uniform_latent_quirk_spurious_peaks():
    """§1.10.7: on a continuous uniform latent the gap test still fires. Sorted-uniform gaps are about exponential
    with mean 1/n; the threshold median + 7 sd is about (ln 2 + 7) / n, exceeded with probability ~e^-7.5, so about
    17,333 * e^-7.5 = 9.6 of the core's gaps exceed it (the spec found 12 on 20,000 samples)."""
    counts = [len(gap_peaks(np.random.default_rng(seed).uniform(size=20_000)).peaks) for seed in range(5)]
    assert all(3 <= c <= 25 for c in counts)
    # and the reduction slices the continuous latent at one of them
    reduction = reduce_dataset(np.random.default_rng(0).uniform(size=(20_000, 1)))
    assert reduction.stop is None and 10 <= len(reduction.indices) < 20_000


def test_evenly_spaced_or_tiny_sets_have_no_peaks():
    assert gap_peaks(np.arange(100.0)).peaks.size == 0  # all gaps 1: nothing below med + 4 sd, no threshold
    assert gap_peaks(three_clusters(per=5)).peaks.size == 0  # 15 values: edge = 14 // 15 = 0, the code's core is empty


# --- one latent ------------------------------------------------------------------------------------------------------


def test_one_latent_three_clusters_keeps_the_middle_cluster():
    values = three_clusters()
    permutation = np.random.default_rng(5).permutation(3000)
    labels = values[permutation][:, None]  # D_cur in a shuffled order: positions differ from cluster order
    cluster = permutation // 1000  # the cluster of each position
    gap = reduce_dataset(labels, boundaries="gap")
    # two peaks, one latent: no edge intervals, the only interval is the middle cluster; kept in label order
    assert gap.stop is None and sorted(cluster[gap.indices]) == [1] * 1000
    assert np.all(np.diff(labels[gap.indices, 0]) >= 0)
    code = reduce_dataset(labels, boundaries="code")
    # the code's interval sorted[999:1999]: the last image of cluster 0, then cluster 1 without its last image
    assert cluster[code.indices].tolist() == [0] + [1] * 999
    assert reduce_dataset(labels, iteration=0, x_peak=1).stop == "x_peak beyond the intervals"
    assert reduce_dataset(labels, iteration=1, x_peak=1).stop is None  # x_peak only counts at iteration 0


def test_one_peak_cases_on_exact_gaps():
    # labels 0..4 and 100..154: gaps 1 except one 96 at gap 4; edge = 59 // 15 = 3, min distance 59 // 50 = 1
    labels = np.concatenate([np.arange(5.0), 100 + np.arange(55.0)])[:, None]
    assert gap_peaks(labels[:, 0]).peaks.tolist() == [4]
    small = reduce_dataset(labels, iteration=0, x_peak=0)  # sorted[0:4]: 4 images (the code drops the fifth)
    assert small.stop == "too small" and small.indices.tolist() == [0, 1, 2, 3]
    assert reduce_dataset(labels, iteration=0, x_peak=1).indices.tolist() == list(range(4, 58))  # [p, n - 2)
    assert reduce_dataset(labels, iteration=0, x_peak=1, boundaries="gap").indices.tolist() == list(range(5, 60))
    assert reduce_dataset(labels, iteration=0, x_peak=2).stop == "x_peak beyond the intervals"
    # later iterations take the denser side: mean gaps g[:4] = 1 < g[4:] = (96 + 54) / 55
    assert reduce_dataset(labels, iteration=1).stop == "too small"


def test_side_cutoff_trims_both_ends_of_a_chosen_interval():
    labels = np.concatenate([np.arange(5.0), 100 + np.arange(55.0)])[:, None]
    trimmed = reduce_dataset(labels, iteration=0, x_peak=1, peak_side_cutoff=0.1)  # int(54 * 0.1) = 5 each side
    assert trimmed.indices.tolist() == list(range(9, 53))


# --- several latents -------------------------------------------------------------------------------------------------


def grid_labels(per_cell=300, seed=0):
    """3 x 3 cells of `per_cell` images in a shuffled order; latent a's label = 10000 * cell_a + a distinct rank
    inside its cluster (gaps 1 inside, ~9100 between clusters), likewise latent b."""
    cells = np.repeat(np.arange(9), per_cell)
    cells = cells[np.random.default_rng(seed).permutation(len(cells))]
    a, b = cells // 3, cells % 3
    labels = np.zeros((len(cells), 2))
    for column, cluster in enumerate((a, b)):
        for c in range(3):
            members = np.flatnonzero(cluster == c)
            labels[members, column] = 10_000 * c + np.arange(len(members))
    return labels, a, b


def test_several_latents_pick_one_cell_of_the_intersections():
    labels, a, b = grid_labels()
    chosen = set()
    for x_peak in range(9):
        reduction = reduce_dataset(labels, iteration=0, x_peak=x_peak, boundaries="gap")
        # 2 peaks and 2 latents: edge intervals added, 3 candidates per latent, 9 intersections of 300 images
        assert reduction.stop is None and reduction.intersections == [300] * 9
        assert len(set(zip(a[reduction.indices], b[reduction.indices]))) == 1  # one cell
        assert np.all(np.diff(reduction.indices) > 0)  # index order
        chosen.add((a[reduction.indices[0]], b[reduction.indices[0]]))
    assert len(chosen) == 9  # every branch a different cell
    assert reduce_dataset(labels, iteration=0, x_peak=9, boundaries="gap").stop == "x_peak beyond the intersections"
    # the code's boundaries: the middle intervals rank first (quality ~ 9101 / 11 against 1 / 1 and 1 / 11 for the
    # edges), so branch 0 is the centre cell, give or take the boundary images the off-by-one moves
    code = reduce_dataset(labels, iteration=0, x_peak=0)
    centre = (a[code.indices] == 1) & (b[code.indices] == 1)
    assert centre.sum() >= 298 and len(code.indices) - centre.sum() <= 2


def test_intersections_enumerate_latent_0_fastest_and_sort_stably_by_distance_to_the_median():
    a0, a1 = np.arange(0, 22), np.arange(22, 40)
    b0 = np.concatenate([np.arange(0, 12), np.arange(22, 32)])
    b1 = np.concatenate([np.arange(12, 22), np.arange(32, 40)])
    cells = intersections([[a0, a1], [b0, b1]])
    # sizes in latent-0-fastest order: (a0,b0) 12, (a1,b0) 10, (a0,b1) 10, (a1,b1) 8; median 10; |size - 10| =
    # 2, 0, 0, 2 -> (a1,b0), (a0,b1), (a0,b0), (a1,b1)
    expected = [np.arange(22, 32), np.arange(12, 22), np.arange(0, 12), np.arange(32, 40)]
    assert [c.tolist() for c in cells] == [e.tolist() for e in expected]
    assert intersections([[np.arange(5)], [np.arange(5)]]) == []  # 5 images are not more than 5


def test_no_intersection_stops():
    # 500 images, 5 clusters per latent (4 peaks: no edge intervals, candidates = middle clusters 1..3); the images
    # of latent a's middle clusters sit in latent b's outer clusters and vice versa: every intersection is empty
    index = np.arange(500)
    cluster_a = index // 100
    cluster_b = np.where(np.isin(cluster_a, (1, 2, 3)), np.where(index % 2 == 0, 0, 4), 1 + index % 3)
    labels = np.zeros((500, 2))
    for column, cluster in enumerate((cluster_a, cluster_b)):
        for c in range(5):
            members = np.flatnonzero(cluster == c)
            labels[members, column] = 1000 * c + np.arange(len(members))
    assert [len(gap_peaks(labels[:, j]).peaks) for j in range(2)] == [4, 4]
    assert reduce_dataset(labels).stop == "no intersection"


def test_stop_conditions():
    assert reduce_dataset(None).stop == "no active latent"
    labels = np.stack([three_clusters(), np.arange(3000.0)], axis=1)  # latent 1 has no peak
    assert reduce_dataset(labels).stop == "no peaks"
    with pytest.raises(InvalidInputError, match="boundaries"):
        reduce_dataset(labels, boundaries="middle")
    with pytest.raises(InvalidInputError, match="NaN"):
        reduce_dataset(np.array([[0.0], [np.nan], [1.0]]))


# --- surrogate labels (Phase C) and their MIG (§1.4c) ----------------------------------------------------------------


def test_leaf_run_levels_compose_positions_and_validate():
    leaf = leaf_run_labels(
        [np.zeros((10, 1)), np.zeros((4, 2)), np.zeros((2, 1)), np.zeros((2, 1))],
        [np.array([2, 4, 6, 8]), np.array([1, 3]), np.array([0, 1])],
        levels=3,
    )
    assert len(leaf.levels) == 3 and leaf.levels[-1].indices is None  # the last level's positions are dropped
    assert [p.tolist() for p in leaf.positions()] == [list(range(10)), [2, 4, 6, 8], [4, 8]]
    with pytest.raises(InvalidInputError, match="selects 3 images"):
        LeafRunLabels((SurrogateLevel(np.zeros((10, 1)), np.array([1, 2, 3])), SurrogateLevel(np.zeros((4, 1)))))
    with pytest.raises(InvalidInputError, match="outside"):
        LeafRunLabels((SurrogateLevel(np.zeros((3, 1)), np.array([0, 7])), SurrogateLevel(np.zeros((2, 1)))))
    with pytest.raises(InvalidInputError, match="levels need"):
        leaf_run_labels([np.zeros((3, 1))], [], levels=3)


def test_surrogate_mig_from_codes_by_hand():
    grid = np.array([(i, j) for i in range(10) for j in range(10)], dtype=float)  # balanced: MI(a, b) = 0
    a, b, zero = grid[:, :1], grid[:, 1:], np.zeros((100, 1))
    # one latent per label column, the others constant or independent: every gap is H, MIG 1
    assert surrogate_mig_from_codes([np.hstack([a, b, zero])], [a]) == pytest.approx(1.0)
    # two latents carry the label: the gap between them is 0
    assert surrogate_mig_from_codes([np.hstack([a, a, zero])], [a]) == pytest.approx(0.0, abs=1e-12)
    # over all columns of all levels: level 0 (gap 0) and level 1 on a == 3 (b: gap 1) -> mean 0.5
    level1 = grid[:, 0] == 3
    codes = [np.hstack([a, a, b]), np.hstack([a, a, b])[level1]]
    assert surrogate_mig_from_codes(codes, [a, b[level1]]) == pytest.approx(0.5)
    with pytest.raises(InvalidInputError, match="constant"):
        surrogate_mig_from_codes([np.hstack([a, b])], [zero])


def test_surrogate_mig_samples_each_level_and_takes_the_median_over_leaf_runs():
    grid = np.array([(i, j) for i in range(10) for j in range(10)], dtype=np.float32)
    images = torch.from_numpy(grid).view(100, 1, 1, 2)  # "images" whose pixels are (a, b)
    represent = lambda x: x.flatten(1)[:, [0, 0, 1]].numpy()  # noqa: E731  codes (a, a, b)
    a, b = grid[:, :1], grid[:, 1:]
    on_a3 = np.flatnonzero(grid[:, 0] == 3)
    leaf_half = LeafRunLabels((SurrogateLevel(a, on_a3), SurrogateLevel(b[on_a3])))  # gaps 0 and 1: 0.5
    leaf_one = LeafRunLabels((SurrogateLevel(b),))  # b is read by one latent: 1
    leaf_zero = LeafRunLabels((SurrogateLevel(a),))  # a is read by two latents: 0
    result = surrogate_mig(represent, images, [leaf_half, leaf_one, leaf_zero])
    assert result["leaf_run_migs"] == pytest.approx([0.5, 1.0, 0.0], abs=1e-12)
    assert result["surrogate_mig"] == pytest.approx(0.5)

    seen = []

    def observations(positions):
        seen.append(np.asarray(positions).copy())
        return images[torch.as_tensor(positions)]

    surrogate_mig(represent, observations, [leaf_half], num_train=20)
    # min(20, |D_L|) images of each level, without replacement, from that level's images only
    assert [len(s) for s in seen] == [20, 10]
    assert len(set(seen[0].tolist())) == 20 and set(seen[1].tolist()) == set(on_a3.tolist())
    with pytest.raises(InvalidInputError, match="labels 100 images"):
        surrogate_mig(represent, images[:50], [leaf_one])
