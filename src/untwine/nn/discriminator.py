"""The FactorVAE discriminator of disentanglement_lib, `fc_discriminator` (spec §1.6; Kim & Mnih 2018, appendix).

Six hidden Dense 1000 layers with leaky ReLU of negative slope **0.2** (TF's `tf.nn.leaky_relu` default, not
PyTorch's 0.01), then Dense 2 logits. Column 0 is "a sample of q(z)" (real), column 1 "a dimension-wise permuted
sample". `forward` returns the logits; `probabilities` the softmax clipped to [1e-6, 1 - 1e-6] as the reference's
wrapper does (the logits are not clipped). Weights are Glorot-uniform with zero biases (spec §1.4).
"""

from __future__ import annotations

import torch
from torch import nn

from untwine.nn.conv import glorot_init_

PROBABILITY_CLIP = 1e-6


def clipped_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """softmax(logits) clipped to [1e-6, 1 - 1e-6] (clipped entries get zero gradient, as tf.clip_by_value)."""
    return torch.softmax(logits, dim=-1).clamp(PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)


class FactorDiscriminator(nn.Module):
    """fc_discriminator: `layers` x (Dense `hidden` + LeakyReLU 0.2) -> Dense 2 logits."""

    def __init__(
        self, latent_dim: int = 10, hidden: int = 1000, layers: int = 6, generator: torch.Generator | None = None
    ):
        super().__init__()
        if latent_dim < 1 or hidden < 1 or layers < 1:
            raise ValueError(f"latent_dim, hidden and layers must be positive, got {latent_dim}, {hidden}, {layers}")
        self.latent_dim = latent_dim
        blocks: list[nn.Module] = []
        width = latent_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.hidden = nn.Sequential(*blocks)
        self.logits = nn.Linear(width, 2)
        glorot_init_(self, generator)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits [N, 2] (column 0: real / q(z), column 1: permuted)."""
        return self.logits(self.hidden(z.flatten(1)))

    def probabilities(self, z: torch.Tensor) -> torch.Tensor:
        """Clipped softmax probabilities [N, 2]."""
        return clipped_probabilities(self(z))
