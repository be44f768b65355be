"""Representation functions of a trained model (spec §6): observations [N, C, H, W] -> codes [N, d] (numpy).

`mean`: the encoder mean mu(x). `sampled`: mu + exp(lv / 2) * eps. The reference draws eps unseeded inside
the graph; here it comes from an explicit generator, so sampled-representation scores are reproducible.

Protocols turn factors into codes with `encode_factors(representation, dataset, factors, generator)`: for a
`ModelRepresentation` with a `CodeCache` (code_cache.py) the codes are gathered from the cache, otherwise the
observations are generated and encoded. Any callable observations -> codes still works as a representation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from untwine.errors import InvalidInputError

Representation = Callable[[torch.Tensor], np.ndarray]
REPRESENTATIONS = ("mean", "sampled")


ENCODE_CHUNK = 256  # images per encoder call: on CPU, 256 is ~2x faster per image than 4096 (cache-resident)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def prepare_model(model) -> None:
    """Evaluation mode, and for conv models the layout training uses (~2x faster convolutions on CPU)."""
    model.eval()
    if getattr(model, "architecture", None) == "conv":
        model.to(memory_format=torch.channels_last)


def encode_posterior(model, observations: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, logvar) of q(z|x), in chunks of ENCODE_CHUNK, channels_last for images (as in training)."""
    means, logvars = [], []
    for i in range(0, observations.shape[0], ENCODE_CHUNK):
        x = observations[i : i + ENCODE_CHUNK].to(device)
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        mean, logvar = model.encode(x)
        means.append(mean)
        logvars.append(logvar)
    if len(means) == 1:
        return means[0], logvars[0]
    return torch.cat(means), torch.cat(logvars)


class ModelRepresentation:
    """The `kind` ("mean" or "sampled") representation of `model`: callable on observations, and
    `encode_factors` for factor indices, served from `cache` (a CodeCache of this model) when one is given.

    The sampled representation draws eps ~ N(0, I) from `generator`, one draw of the codes' shape per call, the
    same with and without the cache.
    """

    def __init__(self, model, kind: str, generator: torch.Generator | None = None, cache=None):
        if kind not in REPRESENTATIONS:
            raise InvalidInputError(f"unknown representation {kind!r}; choose mean or sampled")
        prepare_model(model)
        if cache is not None:
            cache.check_model(model)
        self.model = model
        self.kind = kind
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.cache = cache
        self.device = _device(model)

    def _codes(self, mean: torch.Tensor, logvar: torch.Tensor) -> np.ndarray:
        if self.kind == "mean":
            return mean.float().cpu().numpy()
        noise = torch.randn(mean.shape, generator=self.generator, device=self.generator.device).to(self.device)
        return (mean + torch.exp(0.5 * logvar) * noise).float().cpu().numpy()

    @staticmethod
    def _posterior(mean: torch.Tensor, logvar: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return mean.double().cpu().numpy(), logvar.double().cpu().numpy()

    @torch.inference_mode()
    def __call__(self, observations: torch.Tensor) -> np.ndarray:
        return self._codes(*encode_posterior(self.model, observations, self.device))

    @torch.inference_mode()
    def gaussian_encoder(self, observations: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """observations -> (mean, log-variance) of q(z|x), numpy float64 [N, d] each (no noise drawn)."""
        return self._posterior(*encode_posterior(self.model, observations, self.device))

    @torch.inference_mode()
    def encode_factors(
        self,
        dataset,
        factors: torch.Tensor,
        generator: torch.Generator | None,
        batch_size: int | None = None,
        gaussian: bool = False,
    ):
        """Codes [n, d] of the observations of `factors` (or with `gaussian`, q(z|x)'s (mean, logvar) float64),
        in representation calls of `batch_size` rows (all at once by default)."""
        if self.cache is not None:
            source, posterior = self.cache.index(dataset, factors, generator), self.cache.gather
        else:
            source = dataset.observations(factors, generator)
            posterior = lambda x: encode_posterior(self.model, x, self.device)  # noqa: E731
        finish = self._posterior if gaussian else self._codes
        step = batch_size or max(source.shape[0], 1)
        parts = [finish(*posterior(source[i : i + step])) for i in range(0, source.shape[0], step)]
        if gaussian:
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        return np.concatenate(parts)


def gaussian_encoder(model) -> Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]]:
    """observations -> (mean, log-variance) of q(z|x), numpy [N, d] each."""
    return ModelRepresentation(model, "mean").gaussian_encoder


def mean_representation(model) -> ModelRepresentation:
    return ModelRepresentation(model, "mean")


def sampled_representation(model, generator: torch.Generator) -> ModelRepresentation:
    return ModelRepresentation(model, "sampled", generator)


def representation(model, kind: str, generator: torch.Generator | None = None, cache=None) -> ModelRepresentation:
    """The named representation function of `model` ("mean" or "sampled"), served from `cache` (a CodeCache of
    `model`, code_cache.py) when given."""
    return ModelRepresentation(model, kind, generator, cache)


def encode_factors(
    representation: Representation,
    dataset,
    factors: torch.Tensor,
    generator: torch.Generator | None,
    batch_size: int | None = None,
    gaussian: bool = False,
):
    """Codes [n, d] of the observations of `factors`: the one way protocols turn factors into codes.

    The observations (or, with a code cache, their storage rows) are drawn for all of `factors` at once, consuming
    `generator`'s nuisance and appearance draws as `dataset.observations` does; the representation is then called
    on chunks of `batch_size` rows. With `gaussian`, returns q(z|x)'s (mean, logvar) float64 instead (the
    representation must offer `gaussian_encoder`).
    """
    method = getattr(representation, "encode_factors", None)
    if method is not None:
        return method(dataset, factors, generator, batch_size, gaussian)
    encoder = representation
    if gaussian:
        encoder = getattr(representation, "gaussian_encoder", None)
        if encoder is None:
            raise InvalidInputError("this estimator needs a model's Gaussian encoder (use untwine's representations)")
    observations = dataset.observations(factors, generator)
    step = batch_size or max(observations.shape[0], 1)
    parts = [encoder(observations[i : i + step]) for i in range(0, observations.shape[0], step)]
    if gaussian:
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return np.concatenate([np.asarray(p) for p in parts])


def encode(representation: Representation, observations: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Apply a representation function in chunks of `batch_size`."""
    chunks = [representation(observations[i : i + batch_size]) for i in range(0, observations.shape[0], batch_size)]
    return np.concatenate(chunks, axis=0)


def sample_codes(
    representation: Representation, dataset, num_points: int, generator: torch.Generator, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(codes [N, d], factors [N, K]) for `num_points` i.i.d. samples of `dataset`.

    The reference (`generate_batch_factor_code`) samples and encodes in batches of 16; the batch size only
    chunks the work, so a larger one is used here for speed.
    """
    if num_points < 1:
        raise InvalidInputError(f"num_points must be positive, got {num_points}")
    factors = dataset.sample_factors(num_points, generator)
    codes = [
        encode_factors(representation, dataset, factors[i : i + batch_size], generator)
        for i in range(0, num_points, batch_size)
    ]
    return np.concatenate(codes, axis=0), factors.cpu().numpy()


def sample_train_test(
    representation: Representation, dataset, num_train: int, num_test: int, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(codes_train, factors_train, codes_test, factors_test): two fresh samples, train drawn first (spec §5.4–5.6)."""
    codes_train, factors_train = sample_codes(representation, dataset, num_train, generator)
    codes_test, factors_test = sample_codes(representation, dataset, num_test, generator)
    return codes_train, factors_train, codes_test, factors_test
