"""Encode once (issue 11): the encoder's posterior for every stored image of a data set, shared by all protocols.

A StoredDataset's observations are a finite set of stored images (dSprites, dsprites_noshape, SmallNORB, Cars3D,
Shapes3D, MPI3D), yet the reference suite encodes ~2.9 M images per representation of dSprites's 737,280. A
`CodeCache` holds the mean and log-variance of q(z|x) for every stored image ([N, d] float32 each, on the model's
device), encoded once in chunks; protocols then gather rows by storage index through
`ModelRepresentation.encode_factors`. The index comes from `dataset.grid_index(factors, generator)`, the very call
that picks the observations without the cache, so nuisance factors (dsprites_noshape's shape, SmallNORB's
instance) consume the same draws and select the same image. The sampled representation draws its noise exactly as
without the cache. Codes differ from per-sample encoding only in the last bits that a different encoding batch can
change (see tests/test_code_cache.py).

Data sets whose observations are drawn at random (Color-, Noisy-, Scream-dSprites, dummy_data's noise images) have no
finite set to cache: they are encoded per sample.

Memory: N x d x 2 x 4 bytes on the model's device (dSprites, d = 10: 59 MB; MPI3D-real's 1,036,800 images: 83 MB),
plus one chunk of float images while building; the uint8 images themselves are read chunk by chunk from the
(memory-mapped) storage. Caches above `MAX_CACHE_BYTES` are not built (protocols then encode per sample).
"""

from __future__ import annotations

import inspect
import time

import torch

from untwine.data.stored import StoredDataset
from untwine.errors import InvalidInputError

MAX_CACHE_BYTES = 2 * 1024**3  # above this the protocols encode per sample instead


class CodeCacheMismatchError(InvalidInputError):
    """A code cache was asked for codes of a model or data set it was not built for."""


def cacheable(dataset) -> bool:
    """Whether `dataset`'s observations are a stored, finite set of images (a StoredDataset)."""
    return isinstance(dataset, StoredDataset)


def _dataset_identity(dataset) -> tuple:
    storage = dataset.storage
    return (
        dataset.grid_sizes,
        tuple(storage.shape),
        storage.dtype,
        str(storage.device),
        storage.data_ptr(),
        dataset.packed,
        dataset.channels_last,
        tuple(dataset.observation_shape),
    )


def _weights_version(model) -> tuple[int, ...]:
    """In-place modification counters of the model's parameters: they change when the weights are trained or
    loaded into."""
    return tuple(p._version for p in model.parameters())


class CodeCache:
    """mean, logvar [N, d] of q(z|x) for the N stored images of one data set under one model.

    Build with `CodeCache.build(model, dataset)`; `index(dataset, factors, generator)` turns factors into storage
    rows (drawing nuisance factors as `dataset.observations` does) and `gather(rows)` returns their (mean, logvar).
    """

    def __init__(self, model, dataset, mean: torch.Tensor, logvar: torch.Tensor, elapsed_s: float = 0.0):
        if mean.shape != logvar.shape or mean.ndim != 2 or mean.shape[0] != dataset.storage.shape[0]:
            raise InvalidInputError(
                f"code cache: mean {list(mean.shape)} and logvar {list(logvar.shape)} must both be "
                f"[{dataset.storage.shape[0]}, d]"
            )
        self.model = model
        self.dataset_name = dataset.name
        self._dataset = _dataset_identity(dataset)
        self._weights = _weights_version(model)
        self.mean = mean
        self.logvar = logvar
        self.elapsed_s = elapsed_s

    @classmethod
    def build(cls, model, dataset, chunk: int | None = None) -> CodeCache:
        """Encode every stored image of `dataset` with `model` (in chunks, on the model's device)."""
        from untwine.evaluation.representation import ENCODE_CHUNK, encode_posterior, prepare_model

        if not cacheable(dataset):
            raise InvalidInputError(
                f"{dataset.name}: observations are drawn at random, not a stored set of images; nothing to cache"
            )
        start = time.perf_counter()
        prepare_model(model)
        device = next(model.parameters()).device
        num = dataset.storage.shape[0]
        chunk = chunk or ENCODE_CHUNK
        mean = logvar = None
        with torch.inference_mode():
            for i in range(0, num, chunk):
                rows = torch.arange(i, min(i + chunk, num), device=dataset.device)
                m, lv = encode_posterior(model, dataset.images_at(rows), device)
                if mean is None:
                    mean = torch.empty((num, m.shape[1]), dtype=m.dtype, device=device)
                    logvar = torch.empty_like(mean)
                mean[i : i + m.shape[0]] = m
                logvar[i : i + m.shape[0]] = lv
        return cls(model, dataset, mean, logvar, time.perf_counter() - start)

    @property
    def nbytes(self) -> int:
        return self.mean.nbytes + self.logvar.nbytes

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def check_model(self, model) -> None:
        if model is not self.model:
            raise CodeCacheMismatchError(
                "this code cache was built for another model; build one per model (CodeCache.build(model, dataset))"
            )
        if _weights_version(model) != self._weights:
            raise CodeCacheMismatchError("the model's weights changed since its code cache was built; rebuild it")

    def check_dataset(self, dataset) -> None:
        if not cacheable(dataset) or _dataset_identity(dataset) != self._dataset:
            raise CodeCacheMismatchError(
                f"this code cache holds the codes of {self.dataset_name}'s stored images; it cannot serve "
                f"{getattr(dataset, 'name', type(dataset).__name__)} (different images, grid or device)"
            )

    def index(self, dataset, factors: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Storage rows of the observations of `factors`: the same validation and nuisance draws as
        `dataset.observations(factors, generator)`. A wrapper that keeps its data set in `.dataset` (NoisyLabels)
        is served from the wrapped storage through its own `grid_index`."""
        self.check_dataset(getattr(dataset, "dataset", dataset))
        factors = dataset.check_factors(factors).to(dataset.device)
        return dataset.grid_index(factors, generator).to(self.device)

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) [n, d] of the stored images at `rows`."""
        return self.mean.index_select(0, rows), self.logvar.index_select(0, rows)


def planned_encodings(protocol: str, dataset, options: dict | None = None) -> int:
    """How many observations protocol `protocol` encodes on `dataset` with `options` (one representation)."""
    from untwine.metrics import PROTOCOLS

    settings = {
        p.name: p.default
        for p in inspect.signature(PROTOCOLS[protocol]).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    settings.update(options or {})
    if protocol == "beta_vae":  # two batches per point
        return 2 * settings["batch_size"] * (settings["num_train"] + settings["num_eval"])
    if protocol == "factor_vae":  # the variance estimate, then one batch per vote
        votes = settings["num_train"] + settings["num_eval"]
        return settings["num_variance_estimate"] + settings["batch_size"] * votes
    if protocol == "fairness":  # the training sample, then every value of every other factor per target
        sizes = dataset.factor_sizes
        return settings["num_train"] + (len(sizes) - 1) * sum(sizes) * settings["num_test_points_per_class"]
    train = settings.get("num_train", 0)
    trains = list(train) if isinstance(train, (list, tuple)) else [train]
    return sum(int(n) + int(settings.get("num_test", 0)) for n in trains)


def worthwhile(planned: int, model, dataset, max_bytes: int = MAX_CACHE_BYTES) -> bool:
    """Cache when the protocols would encode more observations than the data set stores, within `max_bytes`."""
    if not cacheable(dataset):
        return False
    num = dataset.storage.shape[0]
    return planned > num and num * code_size(model, dataset) * 2 * 4 <= max_bytes


def code_size(model, dataset) -> int:
    """The model's code size d: its `latent_dim`, else read off the encoding of one stored image."""
    dim = getattr(model, "latent_dim", None)
    if isinstance(dim, int):
        return dim
    from untwine.evaluation.representation import encode_posterior

    with torch.inference_mode():
        rows = torch.zeros(1, dtype=torch.long, device=dataset.device)
        return int(encode_posterior(model, dataset.images_at(rows), next(model.parameters()).device)[0].shape[1])
