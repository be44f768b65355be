"""FactorVAE score (Kim & Mnih 2018, §4 "disentanglement metric"), with the reference protocol (spec §5.2).

1. Global variances (ddof = 1) of `num_variance_estimate` encodings; a dim is active if its *standard deviation*
   is >= `prune_threshold` (0.05 in the study). If none is active, all results are 0.
2. One vote: draw k uniformly, sample `batch_size` factor vectors with column k set to row 0's value, encode, and
   vote votes[k, j*] with j* = argmin over the active dims of local variance (ddof = 1) / global variance; j* is
   the position within the active subset (a consistent relabelling, as in the reference).
3. Majority-vote classifier: class_j = argmax_k train_votes[k, j] (ties and empty columns -> lowest k);
   accuracy = Σ_j votes[class_j, j] / Σ votes, on `num_train` training and `num_eval` fresh votes.
Result keys: `train_accuracy`, `eval_accuracy` (the score), `num_active_dims`.

Deliberate differences from the reference:
- `num_active_dims` is the number of active dims; the reference stores the mask length, always d (spec §5.2).
- Many votes are sampled together and encoded in calls of up to `ENCODE_BATCH_SIZE` images (the reference encodes
  64 per call), so the random stream differs but the statistics are the same.
"""

from __future__ import annotations

import numpy as np
import torch

from untwine.errors import InvalidInputError
from untwine.metrics.beta_vae_score import ENCODE_BATCH_SIZE, encode_factors
from untwine.metrics.utils import check_codes

NAME = "factor_vae_score"
DEFAULTS = {
    "batch_size": 64,
    "num_variance_estimate": 10_000,
    "num_train": 10_000,
    "num_eval": 5_000,
    "prune_threshold": 0.05,
}


def active_dims(global_variances, prune_threshold: float = 0.05) -> np.ndarray:
    """Boolean mask of dims with sqrt(variance) >= prune_threshold (the reference's `_prune_dims`)."""
    return np.sqrt(np.asarray(global_variances, dtype=np.float64)) >= prune_threshold


def factor_vae_votes(codes, labels, global_variances, active, num_factors: int) -> np.ndarray:
    """Votes [K, d] from encoded vote groups: codes [P, B, d] (B >= 2), labels [P] (the fixed factor of each group).

    votes[labels[p], j*_p] += 1 with j*_p = argmin over active dims of var_ddof1(codes[p]) / global_variances.
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 3 or codes.shape[1] < 2:
        raise InvalidInputError(f"codes must have shape [P, B >= 2, d], got {list(codes.shape)}")
    check_codes(codes.reshape(-1, codes.shape[2]), min_points=1)
    labels = np.asarray(labels)
    if labels.shape != (codes.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidInputError(f"labels must be integers of shape [{codes.shape[0]}], got {list(labels.shape)}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_factors):
        raise InvalidInputError(f"labels must lie in [0, {num_factors})")
    global_variances = np.asarray(global_variances, dtype=np.float64)
    active = np.asarray(active, dtype=bool)
    d = codes.shape[2]
    if global_variances.shape != (d,) or active.shape != (d,):
        raise InvalidInputError(f"global_variances and active must have shape [{d}]")
    if not active.any():
        raise InvalidInputError("no active dims to vote for")
    local = np.var(codes[:, :, active], axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        winners = np.argmin(local / global_variances[active], axis=1)
    votes = np.zeros((num_factors, d), dtype=np.int64)
    np.add.at(votes, (labels, winners), 1)
    return votes


def _check_votes(votes, name: str) -> np.ndarray:
    votes = np.asarray(votes)
    if votes.ndim != 2 or not np.issubdtype(votes.dtype, np.integer):
        raise InvalidInputError(f"{name} must be an integer matrix [K, d], got {list(votes.shape)} {votes.dtype}")
    if (votes < 0).any():
        raise InvalidInputError(f"{name} has negative counts")
    if votes.sum() == 0:
        raise InvalidInputError(f"{name} holds no votes")
    return votes


def votes_accuracy(train_votes, eval_votes) -> dict[str, float]:
    """Majority-vote classifier from train_votes [K, d] -> {"train_accuracy", "eval_accuracy"}."""
    train_votes = _check_votes(train_votes, "train_votes")
    eval_votes = _check_votes(eval_votes, "eval_votes")
    if train_votes.shape != eval_votes.shape:
        raise InvalidInputError(f"vote matrices differ in shape: {list(train_votes.shape)} vs {list(eval_votes.shape)}")
    classes = np.argmax(train_votes, axis=0)
    columns = np.arange(train_votes.shape[1])
    return {
        "train_accuracy": float(train_votes[classes, columns].sum() / train_votes.sum()),
        "eval_accuracy": float(eval_votes[classes, columns].sum() / eval_votes.sum()),
    }


def sample_votes(
    representation,
    dataset,
    generator: torch.Generator,
    num_votes: int,
    batch_size: int,
    global_variances: np.ndarray,
    active: np.ndarray,
) -> np.ndarray:
    """Votes [K, d] from `num_votes` fresh vote groups, many groups per representation call."""
    num_factors = dataset.num_factors
    per_chunk = max(1, ENCODE_BATCH_SIZE // batch_size)
    votes = np.zeros((num_factors, global_variances.shape[0]), dtype=np.int64)
    for start in range(0, num_votes, per_chunk):
        p = min(per_chunk, num_votes - start)
        k = torch.randint(num_factors, (p,), generator=generator, device=generator.device)
        factors = dataset.sample_factors(p * batch_size, generator).view(p, batch_size, num_factors)
        rows = torch.arange(p, device=k.device)
        cols = torch.arange(batch_size, device=k.device)
        factors[rows[:, None], cols[None, :], k[:, None]] = factors[rows, 0, k][:, None]  # column k = row 0's value
        codes = encode_factors(representation, dataset, factors.reshape(-1, num_factors), generator)
        labels = k.cpu().numpy()
        votes += factor_vae_votes(codes.reshape(p, batch_size, -1), labels, global_variances, active, num_factors)
    return votes


def evaluate(
    representation,
    dataset,
    generator: torch.Generator,
    batch_size: int = 64,
    num_variance_estimate: int = 10_000,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    prune_threshold: float = 0.05,
) -> dict[str, float | int]:
    """The reference protocol (spec §5.2) -> {"train_accuracy", "eval_accuracy", "num_active_dims"}."""
    if batch_size < 2:
        raise InvalidInputError(f"batch_size must be >= 2 (a variance with ddof = 1), got {batch_size}")
    if num_variance_estimate < 2:
        raise InvalidInputError(f"num_variance_estimate must be >= 2, got {num_variance_estimate}")
    for name, value in (("num_train", num_train), ("num_eval", num_eval)):
        if value < 1:
            raise InvalidInputError(f"{name} must be positive, got {value}")
    factors = dataset.sample_factors(num_variance_estimate, generator)
    global_variances = np.var(encode_factors(representation, dataset, factors, generator), axis=0, ddof=1)
    active = active_dims(global_variances, prune_threshold)
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    train = sample_votes(representation, dataset, generator, num_train, batch_size, global_variances, active)
    evaluation = sample_votes(representation, dataset, generator, num_eval, batch_size, global_variances, active)
    return {**votes_accuracy(train, evaluation), "num_active_dims": int(active.sum())}
