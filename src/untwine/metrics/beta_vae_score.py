"""BetaVAE score (Higgins et al. 2017, §3 "disentanglement metric"), with the reference protocol (spec §5.1).

One point: draw k uniformly, sample two factor batches of `batch_size` that share column k, encode both; the
feature is mean_b |r1_b − r2_b| (length d) and the label is k. A default sklearn `LogisticRegression` is fit on
`num_train` points; `train_accuracy` is its training accuracy and `eval_accuracy` (the paper's score) its accuracy
on `num_eval` fresh points. `logistic="liblinear_ovr"` is the study's sklearn (<= 0.21) default, "lbfgs" today's
(spec §10 item 15).

Deliberate differences from the reference (none change the statistics): many points are sampled together and
encoded in calls of up to `ENCODE_BATCH_SIZE` images (the reference encodes one batch of 64 per call), so the
random stream differs; the classifier's random_state is drawn from the torch generator; features are float64.
"""

from __future__ import annotations

import numpy as np
import torch

from untwine.errors import InvalidInputError
from untwine.metrics.predictors import fit_quietly, logistic_regression, sklearn_seed
from untwine.metrics.utils import check_codes

NAME = "beta_vae_score"
DEFAULTS = {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000, "logistic": "liblinear_ovr"}
ENCODE_BATCH_SIZE = 4096  # images per representation call


def encode_factors(representation, dataset, factors: torch.Tensor, generator: torch.Generator) -> np.ndarray:
    """Codes [n, d] (float64) of the observations of `factors`, in representation calls of ENCODE_BATCH_SIZE."""
    from untwine.evaluation.representation import encode_factors as codes_of

    chunks = []
    for i in range(0, factors.shape[0], ENCODE_BATCH_SIZE):
        part = factors[i : i + ENCODE_BATCH_SIZE]
        codes = np.asarray(codes_of(representation, dataset, part, generator))
        if codes.ndim != 2 or codes.shape[0] != part.shape[0]:
            raise InvalidInputError(
                f"the representation returned shape {list(codes.shape)} for {part.shape[0]} observations; "
                "expected [n, d]"
            )
        chunks.append(check_codes(codes, name="representation output", min_points=1))
    return np.concatenate(chunks, axis=0)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise InvalidInputError(f"{name} must be positive, got {value}")


def sample_features(
    representation, dataset, generator: torch.Generator, num_points: int, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(features [num_points, d], labels [num_points]) of the BetaVAE score, built many points at a time."""
    _check_positive(num_points=num_points, batch_size=batch_size)
    num_factors = dataset.num_factors
    per_chunk = max(1, ENCODE_BATCH_SIZE // (2 * batch_size))
    features, labels = [], []
    for start in range(0, num_points, per_chunk):
        p = min(per_chunk, num_points - start)
        k = torch.randint(num_factors, (p,), generator=generator, device=generator.device)
        first = dataset.sample_factors(p * batch_size, generator).view(p, batch_size, num_factors)
        second = dataset.sample_factors(p * batch_size, generator).view(p, batch_size, num_factors)
        rows = torch.arange(p, device=k.device)[:, None]
        cols = torch.arange(batch_size, device=k.device)[None, :]
        second[rows, cols, k[:, None]] = first[rows, cols, k[:, None]]
        both = torch.cat([first.reshape(-1, num_factors), second.reshape(-1, num_factors)])
        codes = encode_factors(representation, dataset, both, generator)
        r1, r2 = codes[: p * batch_size], codes[p * batch_size :]
        features.append(np.abs(r1 - r2).reshape(p, batch_size, -1).mean(axis=1))
        labels.append(k.cpu().numpy())
    return np.concatenate(features), np.concatenate(labels).astype(np.int64)


def _check_labels(labels, num_points: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != num_points:
        raise InvalidInputError(f"{name} must have shape [{num_points}], got {list(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InvalidInputError(f"{name} must be integer factor indices, got dtype {labels.dtype}")
    return labels


def beta_vae_score_from_features(
    train_features,
    train_labels,
    eval_features,
    eval_labels,
    logistic: str = "liblinear_ovr",
    random_state: int | None = None,
) -> dict[str, float]:
    """Fit the default logistic regression on BetaVAE features [n, d] with labels [n] -> train/eval accuracies."""
    train_features = check_codes(train_features, name="train_features", min_points=1)
    eval_features = check_codes(eval_features, name="eval_features", min_points=1)
    if train_features.shape[1] != eval_features.shape[1]:
        raise InvalidInputError(
            f"train_features have {train_features.shape[1]} columns but eval_features {eval_features.shape[1]}"
        )
    train_labels = _check_labels(train_labels, train_features.shape[0], "train_labels")
    eval_labels = _check_labels(eval_labels, eval_features.shape[0], "eval_labels")
    if np.unique(train_labels).size < 2:
        raise InvalidInputError("train_labels take a single value; the classifier needs at least 2 classes")
    model = fit_quietly(logistic_regression(logistic, random_state), train_features, train_labels)
    return {
        "train_accuracy": float(np.mean(model.predict(train_features) == train_labels)),
        "eval_accuracy": float(model.score(eval_features, eval_labels)),
    }


def evaluate(
    representation,
    dataset,
    generator: torch.Generator,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    logistic: str = "liblinear_ovr",
) -> dict[str, float]:
    """The reference protocol (spec §5.1) -> {"train_accuracy", "eval_accuracy"}."""
    if dataset.num_factors < 2:
        raise InvalidInputError("the BetaVAE score needs a dataset with at least 2 factors")
    logistic_regression(logistic)  # validate the flavour before any encoding
    train_x, train_y = sample_features(representation, dataset, generator, num_train, batch_size)
    seed = sklearn_seed(generator)
    eval_x, eval_y = sample_features(representation, dataset, generator, num_eval, batch_size)
    return beta_vae_score_from_features(train_x, train_y, eval_x, eval_y, logistic, seed)
