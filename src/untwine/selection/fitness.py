"""PBT fitness functions of PBT-VAE and rPU-VAE (Estermann et al. 2020 §3-4; spec model-selection-methods.md §1.4).

`parse_fitness("mig" | "mig:1000" | "dci" | "dci:2000" | "udr" | "udr:500")` names one; `score(spec, models,
dataset)` scores a member (one model, or the k models of a UDR bundle) on the member's current data set.

- ``mig[:N]`` (§1.4b, PBT-S-VAE): N images (default 50,000, `nmig.num_train`; "mig:1000" is the semi-supervised
  1,000-label variant) drawn once without replacement by `RandomState(0)` (`score_random_seed`), so every member
  and round is scored on the same labelled images; MIG of the latent means with 20 bins (`metrics.mig`). Factors
  that are constant on the data set (an rPU subset) are left out (their entropy is 0: MIG is undefined there).
- ``dci[:N]`` (§1.4d): DCI disentanglement (`metrics.dci`, gradient-boosted trees) on N training images (default
  10,000) and N / 2 test images, drawn the same way.
- ``udr[:N]`` (§1.4a, PBT-U-VAE): the member's k models encode the same N images (default 1,000: the current data
  set shuffled by `RandomState(0)`, its first N, or len - len mod 10 when smaller), in batches of 10; the per-latent
  KL is `rpu_reduction.latent_kl` with the rPU code's estimate ("code", |batch-mean log sigma| read as a log
  variance; "correct" is the option), and `udr.udr(..., no_informative="zero")` gives the per-model scores u_i; the
  fitness is their mean, and argmax u_i is the model the member exports.
- ``surrogate_mig`` (§1.4c, rPU-VAE's final run): `surrogate_labels.surrogate_mig` against the leaf runs' labels.

A score that cannot be computed (non-finite codes of a diverged model, a scoring error) is 0 with the reason kept,
the reference's rule for a member whose scoring fails (§1.3.9).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from untwine.errors import InvalidInputError

DEFAULT_POINTS = {"mig": 50_000, "dci": 10_000, "udr": 1_000, "surrogate_mig": 50_000}
FITNESS_NAMES = tuple(DEFAULT_POINTS)
SCORE_SEED = 0  # score_random_seed
UDR_BATCH = 10  # udr_sklearn.batch_size


@dataclass(frozen=True)
class FitnessSpec:
    name: str
    num_points: int
    kl_estimate: str = "code"  # udr: the rPU code's KL estimate (or "correct")

    @property
    def label(self) -> str:
        return f"{self.name}:{self.num_points}" if self.num_points != DEFAULT_POINTS[self.name] else self.name

    @property
    def models_per_member(self) -> int:
        return 5 if self.name == "udr" else 1


def parse_fitness(text: str, kl_estimate: str = "code") -> FitnessSpec:
    """ "mig", "mig:1000", "dci", "udr", "udr:500", "surrogate_mig" -> FitnessSpec."""
    name, _, count = str(text).strip().partition(":")
    if name not in DEFAULT_POINTS:
        raise InvalidInputError(f"unknown fitness {text!r}; choose mig, mig:N, dci, dci:N, udr, udr:N")
    if count:
        try:
            points = int(count)
        except ValueError:
            raise InvalidInputError(f"fitness {text!r}: the number of points must be an integer") from None
    else:
        points = DEFAULT_POINTS[name]
    if points < 10:
        raise InvalidInputError(f"fitness {text!r}: needs at least 10 points")
    if kl_estimate not in ("code", "correct"):
        raise InvalidInputError(f"unknown KL estimate {kl_estimate!r}; choose code or correct")
    return FitnessSpec(name, points, kl_estimate)


def check_points(spec: FitnessSpec, dataset) -> None:
    """A labelled subset larger than the data set is an error for the supervised fitnesses."""
    if spec.name in ("mig", "dci"):
        wanted = spec.num_points + (spec.num_points // 2 if spec.name == "dci" else 0)
        if wanted > len(dataset) and spec.num_points != DEFAULT_POINTS[spec.name]:
            raise InvalidInputError(
                f"fitness {spec.label} asks for {wanted} labelled images but the data set has {len(dataset)}"
            )


def sample_positions(size: int, n: int, seed: int = SCORE_SEED) -> np.ndarray:
    """min(n, size) positions of a data set of `size`, drawn without replacement by RandomState(seed)."""
    return np.random.RandomState(seed).choice(size, size=min(n, size), replace=False)


def _grid_indices(dataset, positions: np.ndarray) -> torch.Tensor:
    positions = torch.as_tensor(positions, dtype=torch.long)
    indices = getattr(dataset, "indices", None)  # a SubsetDataset: positions in the subset
    return indices[positions] if indices is not None else positions


def labelled_sample(dataset, positions: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """(observations [n, C, H, W], factors [n, K]) of the images at `positions` of the data set."""
    base = getattr(dataset, "base", dataset)
    factors = base.index_to_factors(_grid_indices(dataset, positions))
    observations = base.observations(factors, torch.Generator(device=base.device).manual_seed(SCORE_SEED))
    return observations, factors.cpu().numpy()


def _means(model, observations: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(means, log sigma) [n, d] in eval mode (BatchNorm running statistics), the model's mode restored."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    means, log_sigma = [], []
    try:
        with torch.inference_mode():
            for i in range(0, len(observations), batch_size):
                mean, logvar = model.encode(observations[i : i + batch_size].to(device))
                means.append(mean.double().cpu().numpy())
                log_sigma.append((logvar / 2).double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(means), np.concatenate(log_sigma)


def _varying(factors: np.ndarray) -> np.ndarray:
    return np.flatnonzero([np.unique(factors[:, k]).size > 1 for k in range(factors.shape[1])])


def mig_fitness(model, dataset, num_points: int) -> dict:
    from untwine.metrics.mig import mig

    observations, factors = labelled_sample(dataset, sample_positions(len(dataset), num_points))
    codes, _ = _means(model, observations)
    keep = _varying(factors)
    if keep.size == 0:
        raise InvalidInputError("every ground-truth factor is constant on this data set: MIG is undefined")
    return {"fitness": float(mig(codes, factors[:, keep])["discrete_mig"])}


def dci_fitness(model, dataset, num_points: int) -> dict:
    from untwine.metrics.dci import dci

    positions = sample_positions(len(dataset), num_points + num_points // 2)
    observations, factors = labelled_sample(dataset, positions)
    codes, _ = _means(model, observations)
    keep = _varying(factors)
    n = min(num_points, len(positions) * 2 // 3)
    result = dci(codes[:n], factors[:n, keep], codes[n:], factors[n:, keep], random_state=SCORE_SEED)
    return {"fitness": float(result["disentanglement"])}


def udr_sample(dataset, num_points: int) -> torch.Tensor:
    """The UDR scoring images: the data set shuffled by RandomState(0), its first num_points (or len - len mod 10)."""
    size = len(dataset)
    n = min(num_points, size - size % UDR_BATCH)
    if n < 2 * UDR_BATCH:
        raise InvalidInputError(f"UDR scoring needs at least {2 * UDR_BATCH} images, the data set has {size}")
    positions = np.random.RandomState(SCORE_SEED).permutation(size)[:n]
    return labelled_sample(dataset, positions)[0]


def udr_fitness(models: Sequence, dataset, num_points: int, kl_estimate: str = "code") -> dict:
    from untwine.selection.rpu_reduction import latent_kl
    from untwine.selection.udr import udr

    if len(models) < 2:
        raise InvalidInputError("the UDR fitness compares the models of a member: it needs at least 2")
    observations = udr_sample(dataset, num_points)
    representations, kl = [], []
    for model in models:
        means, log_sigma = _means(model, observations)
        representations.append(means)
        kl.append(latent_kl(means, log_sigma, kl_estimate, UDR_BATCH))
    result = udr(np.stack(representations), np.stack(kl), no_informative="zero")
    scores = result["model_scores"]
    return {
        "fitness": float(np.mean(scores)),
        "model_scores": [float(s) for s in scores],
        "best_model": int(np.argmax(scores)),
        "num_informative": [int(v) for v in result["num_informative"]],
    }


def score(spec: FitnessSpec, models: Sequence, dataset, leaf_runs=None, observations=None) -> dict:
    """{"fitness": float, ...}: a score of 0 with "error" when it cannot be computed (§1.3.9)."""
    try:
        if spec.name == "udr":
            result = udr_fitness(models, dataset, spec.num_points, spec.kl_estimate)
        elif spec.name == "mig":
            result = mig_fitness(models[0], dataset, spec.num_points)
        elif spec.name == "dci":
            result = dci_fitness(models[0], dataset, spec.num_points)
        else:
            from untwine.selection.surrogate_labels import surrogate_mig

            model = models[0]

            def represent(x):
                return _means(model, x)[0]

            found = surrogate_mig(represent, observations, leaf_runs, num_train=spec.num_points)
            result = {"fitness": found["surrogate_mig"], "leaf_run_migs": found["leaf_run_migs"]}
    except (InvalidInputError, ValueError, FloatingPointError) as exc:
        return {"fitness": 0.0, "error": str(exc).splitlines()[0]}
    if not math.isfinite(result["fitness"]):
        return {**result, "fitness": 0.0, "error": "the fitness is not finite"}
    return result
