"""rPU-VAE's labelling and data-set reduction (Estermann et al. 2020, §4.2 and Fig. 3; spec:
model-selection-methods.md §1.4a, §1.5 Phase B; the rPU code's explorer.RPUVAEExplorer.label_dataset,
reduce_dataset, get_peak, find_nonempty_intersections).

**Labelling** (`label_dataset`): encode every image of the current data set D_cur to latent means, estimate each
latent's KL to the prior, and call a latent *active* when its mean KL exceeds 1; the labels are the active
latents' means. Two KL estimates (§1.10.1):

- ``"code"`` (faithful, the default): per batch of 32 (in data-set order), m_j = |batch mean of log sigma_j| is used
  as if it were a log-variance: KL_j = mean_batch 0.5 (mu_j^2 + exp(m_j) - m_j - 1); then the unweighted mean over
  batches (a last, shorter batch weighs as much as a full one). It overstates active latents (about 8 instead of
  2.5 at sigma = e^-3, mu = 0) and reads latents whose log sigma averages out as collapsed.
- ``"correct"``: the Gaussian KL, 0.5 (mu^2 + sigma^2 - log sigma^2 - 1), averaged over all images.

**Reduction** (`reduce_dataset`), for each active latent: sort its labels, take the gaps between consecutive
sorted values (n - 1 of them), ignore the outer edge = (n - 1) // 15 gaps at each end, and find peaks (unusually
large gaps, i.e. boundaries between clusters) with `scipy.signal.find_peaks(core, height=med + 7 sd,
distance=(n - 1) // 50)`, where med is the core's median and sd the std of the core values below med + 4 std(core).
The runs of sorted images between peaks are the candidate intervals, ranked by quality = min(the two boundary
gaps) / the mean gap inside. One latent: one interval is chosen; several latents: each keeps its best
min(5, #intervals) intervals, every combination (one interval per latent) is intersected, the intersections of
more than 5 images are sorted by |size - median size|, and one is chosen. The run stops at no active latent, no
peak, no intersection, an unavailable branch, or a result of fewer than 10 images.

Faithful details kept (the default, ``boundaries="code"``), each a decision on behaviour the spec leaves implicit:

- A gap g[p] lies between sorted positions p and p + 1, but the code's intervals are sorted[p_k : p_k+1]: each
  holds the last image before its left boundary and misses its own last image; its "internal" mean gap is
  mean(g[p_k : p_k+1]), which includes the left boundary gap. With one peak, or with edge intervals, the chosen
  last interval also ends at n - 2 (it misses the last two images); the multi-latent candidate sets of the one-peak
  case run to the end. ``boundaries="gap"`` is the corrected variant: interval k = sorted[p_k + 1 : p_k+1 + 1],
  internal gaps exclude both boundaries (an interval without internal gaps has quality 0), intervals run to the end.
- Edge intervals (nominal boundary gap 1) are added only with 2 or 3 peaks and several latents (§1.10.6).
- Spurious peaks on continuous latents (§1.10.7): on a uniform latent the median + 7 sd test still fires (sorted
  uniform gaps are about exponential: ~n e^-7.5 exceedances), so continuous factors are sliced arbitrarily.
- A one-latent result keeps the sorted-by-label order of its images; a multi-latent result is in index order.
- Combinations are enumerated with latent 0 varying fastest and ties in |size - median| keep that order.
- Where the code would crash, this stops the run instead: fewer than 16 images (empty core; the code finds no
  peak), fewer than 51 images (`distance = 0`, which scipy rejects: no minimum distance is used here), a branch
  `x_peak` beyond the intervals (IndexError in the code). Combinations whose partial intersection already holds
  5 or fewer images are skipped (they cannot qualify; the result is the same).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.signal import find_peaks

from untwine.errors import InvalidInputError

KL_ESTIMATES = ("code", "correct")
BOUNDARIES = ("code", "gap")
ACTIVE_THRESHOLD = 1.0  # label_dataset: mean KL > 1
LABEL_BATCH_SIZE = 32
MAX_CANDIDATES = 5  # intervals kept per latent when several latents are active
MIN_INTERSECTION = 5  # intersections need more than 5 images
MIN_DATASET = 10  # a reduced data set needs at least 10 images
EDGE_FRACTION = 15  # edge = (n - 1) // 15 gaps ignored at each end
DISTANCE_FRACTION = 50  # min peak distance = (n - 1) // 50 gaps


# --- labelling (§1.5 B.1) --------------------------------------------------------------------------------------------


def code_kl(means: np.ndarray, log_sigma: np.ndarray) -> np.ndarray:
    """The rPU code's per-batch "KL" [d]: m = |batch mean of log sigma| used as a log-variance (§1.4a step 3)."""
    m = np.abs(np.mean(log_sigma, axis=0))
    return np.mean(0.5 * (np.square(means) + np.exp(m) - m - 1), axis=0)


def gaussian_kl(means: np.ndarray, log_sigma: np.ndarray) -> np.ndarray:
    """The KL of N(mu, sigma^2) to N(0, 1) per latent, averaged over the rows [d]."""
    return np.mean(0.5 * (np.square(means) + np.exp(2 * log_sigma) - 2 * log_sigma - 1), axis=0)


def latent_kl(
    means: np.ndarray, log_sigma: np.ndarray, estimate: str = "code", batch_size: int = LABEL_BATCH_SIZE
) -> np.ndarray:
    """Per-latent KL of encodings [N, d] in data-set order: "code" averages `code_kl` over consecutive batches of
    `batch_size` (unweighted); "correct" is `gaussian_kl` over all rows."""
    means, log_sigma = np.asarray(means, dtype=np.float64), np.asarray(log_sigma, dtype=np.float64)
    if means.ndim != 2 or means.shape != log_sigma.shape or means.shape[0] < 1:
        raise InvalidInputError(
            f"means and log sigma must share one [N, d] shape, got {means.shape}, {log_sigma.shape}"
        )
    if estimate == "correct":
        return gaussian_kl(means, log_sigma)
    if estimate != "code":
        raise InvalidInputError(f"unknown KL estimate {estimate!r}; choose {', '.join(KL_ESTIMATES)}")
    batches = [
        code_kl(means[i : i + batch_size], log_sigma[i : i + batch_size]) for i in range(0, len(means), batch_size)
    ]
    return np.mean(batches, axis=0)


@dataclass(frozen=True)
class Labelling:
    """The encodings of D_cur by one model: means [N, d], per-latent KL [d], the active latents (KL > threshold)."""

    means: np.ndarray
    kl: np.ndarray
    active: np.ndarray
    estimate: str = "code"

    @property
    def labels(self) -> np.ndarray | None:
        """The surrogate labels [N, a]: the active latents' means; None when no latent is active (the run stops)."""
        return self.means[:, self.active] if self.active.size else None


def labelling_from_encodings(
    means: np.ndarray,
    log_sigma: np.ndarray,
    estimate: str = "code",
    threshold: float = ACTIVE_THRESHOLD,
    batch_size: int = LABEL_BATCH_SIZE,
) -> Labelling:
    kl = latent_kl(means, log_sigma, estimate, batch_size)
    return Labelling(np.asarray(means, dtype=np.float64), kl, np.flatnonzero(kl > threshold), estimate)


def _as_float_images(batch) -> torch.Tensor:
    batch = torch.as_tensor(batch)
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()


def label_dataset(
    model: torch.nn.Module,
    observations,
    estimate: str = "code",
    threshold: float = ACTIVE_THRESHOLD,
    batch_size: int = LABEL_BATCH_SIZE,
) -> Labelling:
    """Encode D_cur (`observations` [N, C, H, W], uint8 0..255 or float 0..1, in data-set order) with `model` (a
    GaussianVAE) in evaluation mode, in batches of 32 as the reference, and label it (§1.5 B.1). The model's
    train/eval mode is restored afterwards. log sigma = logvar / 2 (exact for the rpu_conv head)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    means, log_sigmas = [], []
    try:
        with torch.inference_mode():
            for i in range(0, len(observations), batch_size):
                mean, logvar = model.encode(_as_float_images(observations[i : i + batch_size]).to(device))
                means.append(mean.double().cpu().numpy())
                log_sigmas.append((logvar / 2).double().cpu().numpy())
    finally:
        model.train(was_training)
    if not means:
        raise InvalidInputError("cannot label an empty data set")
    return labelling_from_encodings(np.concatenate(means), np.concatenate(log_sigmas), estimate, threshold, batch_size)


# --- peaks of the sorted-label gaps (§1.5 B.2) ----------------------------------------------------------------------


@dataclass(frozen=True)
class GapPeaks:
    """One latent's sorted labels and the peaks found in their gaps."""

    order: np.ndarray  # positions in D_cur sorted by label (np.argsort)
    gaps: np.ndarray  # [n - 1] consecutive differences of the sorted labels
    edge: int
    min_distance: int
    height: float  # the peak threshold med + 7 sd (nan when the core is empty)
    peaks: np.ndarray  # gap positions p (boundary between sorted p and p + 1), ascending


def gap_peaks(values: np.ndarray) -> GapPeaks:
    """The peak search of `reduce_dataset` on one latent's labels [n]."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise InvalidInputError(f"a latent's labels must be a vector of at least 2 values, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise InvalidInputError("labels contain NaN or inf")
    order = np.argsort(values)
    gaps = np.diff(np.sort(values))
    edge = len(gaps) // EDGE_FRACTION
    distance = len(gaps) // DISTANCE_FRACTION
    core = gaps[edge:-edge] if edge else gaps[:0]  # the code's slice [edge:-edge] is empty when edge == 0
    height, peaks = float("nan"), np.zeros(0, dtype=np.int64)
    if core.size:
        median = np.median(core)
        below = core[core < np.std(core) * 4 + median]
        spread = np.std(below) if below.size else float("nan")  # nothing below (all gaps equal): no peaks
        height = float(median + 7 * spread)
        if math.isfinite(height):
            found, _ = find_peaks(core, height=height, distance=distance if distance >= 1 else None)
            peaks = found.astype(np.int64) + edge
    return GapPeaks(order, gaps, edge, distance, height, peaks)


@dataclass(frozen=True)
class Interval:
    """A run of sorted images [start, stop) with its ranking quality."""

    start: int
    stop: int
    quality: float


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def _ranked_intervals(found: GapPeaks, with_edges: bool, boundaries: str) -> list[Interval]:
    """Intervals between consecutive peaks (plus the two edge intervals if asked), best quality first (get_peak's
    np.argsort(quality)[::-1])."""
    g, p = found.gaps, list(found.peaks)
    n = len(g) + 1
    if boundaries == "code":
        cuts = [0, *p, n - 2] if with_edges else p
        means = [_mean(g[a:b]) for a, b in zip(p[:-1], p[1:])]
        if with_edges:
            means = [_mean(g[: p[0]]), *means, _mean(g[p[-1] :])]
        spans = list(zip(cuts[:-1], cuts[1:]))
    else:
        cuts = [-1, *p, n - 1] if with_edges else p
        spans = [(a + 1, b + 1) for a, b in zip(cuts[:-1], cuts[1:])]
        means = [_mean(g[a : b - 1]) for a, b in spans]  # gaps strictly inside [a, b)
    heights = [float(g[i]) for i in p]
    if with_edges:
        heights = [1.0, *heights, 1.0]
    with np.errstate(divide="ignore", invalid="ignore"):
        quality = np.array([min(heights[i], heights[i + 1]) for i in range(len(spans))]) / np.array(means)
    quality = np.where(np.isnan(quality), 0.0, quality)  # no internal gap ("gap" boundaries only)
    return [Interval(spans[i][0], spans[i][1], float(quality[i])) for i in np.argsort(quality)[::-1]]


def _one_peak_intervals(found: GapPeaks, boundaries: str) -> tuple[list[Interval], list[Interval]]:
    """One peak p: (candidates for the multi-latent path, the two intervals the single-latent path chooses from)
    with the internal mean gap standing in for the quality (smaller = denser)."""
    g, p = found.gaps, int(found.peaks[0])
    n = len(g) + 1
    if boundaries == "code":
        candidates = [Interval(0, p, 0.0), Interval(p, n, 0.0)]
        chosen = [Interval(0, p, _mean(g[:p])), Interval(p, n - 2, _mean(g[p:]))]
    else:
        candidates = [Interval(0, p + 1, 0.0), Interval(p + 1, n, 0.0)]
        chosen = [Interval(0, p + 1, _mean(g[:p])), Interval(p + 1, n, _mean(g[p + 1 :]))]
    return candidates, chosen


@dataclass
class LatentReduction:
    """Diagnostics of one active latent: its peaks and the intervals considered (in sorted positions)."""

    latent: int
    peaks: GapPeaks
    intervals: list[Interval] = field(default_factory=list)
    chosen: Interval | None = None


@dataclass
class Reduction:
    """The result of one reduction. The run continues with D_next = D_cur[indices] only when `stop` is None; with
    stop "too small" the (fewer than 10) indices are kept for the record."""

    indices: np.ndarray | None
    stop: str | None
    latents: list[LatentReduction] = field(default_factory=list)
    intersections: list[int] = field(default_factory=list)  # sizes of the qualifying intersections, in pick order


def intersections(candidates: Sequence[Sequence[np.ndarray]], min_size: int = MIN_INTERSECTION) -> list[np.ndarray]:
    """find_nonempty_intersections: intersect one candidate index set per latent for every combination (latent 0
    varying fastest), keep those of more than `min_size` images, sorted stably by |size - median size|."""
    found: list[np.ndarray] = []
    sets = [[np.unique(np.asarray(c, dtype=np.int64)) for c in latent] for latent in candidates]

    def visit(latent: int, partial: np.ndarray | None) -> None:  # the last latent is the outermost loop
        if latent < 0:
            found.append(partial)
            return
        for c in sets[latent]:
            common = c if partial is None else np.intersect1d(partial, c, assume_unique=True)
            if common.size > min_size:  # a set of <= min_size images can only shrink further
                visit(latent - 1, common)

    visit(len(sets) - 1, None)
    if not found:
        return []
    median = np.median([len(s) for s in found])
    return sorted(found, key=lambda s: abs(len(s) - median))


def reduce_dataset(
    labels: np.ndarray | None,
    iteration: int = 0,
    x_peak: int = 0,
    boundaries: str = "code",
    peak_side_cutoff: float = 0.0,
) -> Reduction:
    """One reduction of D_cur by its surrogate labels [n, a] (§1.5 B.2-B.4); `x_peak` is the leaf run's branch,
    used at iteration 0 only. Returns the positions (in D_cur) of the images of D_next, or the reason to stop."""
    if boundaries not in BOUNDARIES:
        raise InvalidInputError(f"unknown interval boundaries {boundaries!r}; choose {', '.join(BOUNDARIES)}")
    if not 0 <= peak_side_cutoff < 0.5:
        raise InvalidInputError(f"peak_side_cutoff must be in [0, 0.5), got {peak_side_cutoff}")
    if x_peak < 0:
        raise InvalidInputError(f"x_peak must be >= 0, got {x_peak}")
    if labels is None:
        return Reduction(None, "no active latent")
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[1] < 1:
        raise InvalidInputError(f"labels must have shape [n, a], got {labels.shape}")
    several = labels.shape[1] > 1
    branch = x_peak if iteration == 0 else 0
    result = Reduction(None, None)
    candidate_sets: list[list[np.ndarray]] = []
    chosen_indices = None
    for j in range(labels.shape[1]):
        found = gap_peaks(labels[:, j])
        latent = LatentReduction(j, found)
        result.latents.append(latent)
        if found.peaks.size == 0:
            result.stop = "no peaks"
            return result
        if found.peaks.size == 1:
            candidates, pair = _one_peak_intervals(found, boundaries)
            latent.intervals = candidates if several else pair
            if several:
                candidate_sets.append([found.order[c.start : c.stop] for c in candidates])
                continue
            if iteration == 0:
                if x_peak > 1:
                    result.stop = "x_peak beyond the intervals"
                    return result
                latent.chosen = pair[x_peak]
            else:
                latent.chosen = pair[0] if pair[0].quality < pair[1].quality else pair[1]  # the denser one
        else:
            ranked = _ranked_intervals(found, with_edges=several and found.peaks.size <= 3, boundaries=boundaries)
            latent.intervals = ranked
            if several:
                kept = ranked[:MAX_CANDIDATES]
                candidate_sets.append([found.order[c.start : c.stop] for c in kept])
                continue
            if branch >= len(ranked):
                result.stop = "x_peak beyond the intervals"
                return result
            latent.chosen = ranked[branch]
        chosen_indices = found.order[latent.chosen.start : latent.chosen.stop]
        trim = int(len(chosen_indices) * peak_side_cutoff)
        if trim > 0:
            chosen_indices = chosen_indices[trim:-trim]
    if several:
        cells = intersections(candidate_sets)
        result.intersections = [len(c) for c in cells]
        if not cells:
            result.stop = "no intersection"
            return result
        if branch >= len(cells):
            result.stop = "x_peak beyond the intersections"
            return result
        chosen_indices = np.sort(cells[branch])
    result.indices = np.asarray(chosen_indices, dtype=np.int64)
    if len(result.indices) < MIN_DATASET:
        result.stop = "too small"
    return result


__all__ = [
    "Labelling",
    "Reduction",
    "gap_peaks",
    "intersections",
    "label_dataset",
    "labelling_from_encodings",
    "latent_kl",
    "reduce_dataset",
]
