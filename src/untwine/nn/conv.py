"""The reference encoder/decoder of disentanglement_lib (spec §1; Locatello et al. 2019, Table 1).

`ConvEncoder`/`DeconvDecoder` are the study's architecture (conv_encoder / deconv_decoder); `FCEncoder` /
`FCDecoder` are the fully-connected alternatives (beta-VAE paper, Table 1). Encoders return the mean and the
**log-variance** of a diagonal Gaussian; decoders return per-pixel, per-channel Bernoulli **logits** (no sigmoid).
Weights are Glorot-uniform with zero biases, as TF1's defaults (spec §1.4).

`RPUConvEncoder`/`RPUConvDecoder` (architecture "rpu_conv") are the network of the rPU-VAE code (Estermann et al.
2020; model-selection-methods.md §1.2, the beta-TCVAE code's ConvEncoder/ConvDecoder): all-convolutional, with
BatchNorm + ReLU after every layer but the last, PyTorch's default initialisation, and an encoder head that gives
(mean, **log sigma**), converted to the log-variance of the `GaussianVAE` interface in `RPUConvEncoder.forward`.
Its BatchNorm layers make train()/eval() matter: training uses batch statistics and updates the running ones
(buffers, part of `state_dict()` and so of every checkpoint); evaluation (`model.eval()`) uses the running ones.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def glorot_init_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Glorot/Xavier-uniform kernels (fan over kernel area x channels) and zero biases, as TF1's defaults."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ConvEncoder(nn.Module):
    """conv_encoder: 4 convs (32, 32, 64, 64 channels; kernels 4, 4, 2, 2; stride 2) -> Dense 256 -> mean, log-var."""

    def __init__(self, in_channels: int = 1, latent_dim: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 4, stride=2, padding=1),
            nn.ReLU(),  # 64 -> 32 (TF SAME pads 1)
            nn.Conv2d(32, 32, 4, stride=2, padding=1),
            nn.ReLU(),  # 32 -> 16
            nn.Conv2d(32, 64, 2, stride=2, padding=0),
            nn.ReLU(),  # 16 -> 8 (2x2 kernels, spec §1.1)
            nn.Conv2d(64, 64, 2, stride=2, padding=0),
            nn.ReLU(),  # 8 -> 4
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 256),
            nn.ReLU(),
        )
        self.mean = nn.Linear(256, latent_dim)
        self.logvar = nn.Linear(256, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.mean(h), self.logvar(h)


class DeconvDecoder(nn.Module):
    """deconv_decoder: Dense 256 -> Dense 1024 -> 4 transposed convs (64, 32, 32, C; kernel 4, stride 2) -> logits."""

    def __init__(self, out_channels: int = 1, latent_dim: int = 10):
        super().__init__()
        self.dense = nn.Sequential(
            nn.Linear(latent_dim, 256),
            nn.ReLU(),
            nn.Linear(256, 1024),
            nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1),
            nn.ReLU(),  # 4 -> 8
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),  # 8 -> 16
            nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),
            nn.ReLU(),  # 16 -> 32
            nn.ConvTranspose2d(32, out_channels, 4, stride=2, padding=1),  # 32 -> 64, logits
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.dense(z).view(-1, 64, 4, 4))


class FCEncoder(nn.Module):
    """fc_encoder: flatten -> Dense 1200 ReLU -> Dense 1200 ReLU -> mean, log-var."""

    def __init__(self, observation_shape: tuple[int, int, int] = (1, 64, 64), latent_dim: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(observation_shape), 1200),
            nn.ReLU(),
            nn.Linear(1200, 1200),
            nn.ReLU(),
        )
        self.mean = nn.Linear(1200, latent_dim)
        self.logvar = nn.Linear(1200, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.mean(h), self.logvar(h)


class FCDecoder(nn.Module):
    """fc_decoder: Dense 1200 tanh x 3 -> Dense prod(shape) linear -> reshape (logits)."""

    def __init__(self, observation_shape: tuple[int, int, int] = (1, 64, 64), latent_dim: int = 10):
        super().__init__()
        self.observation_shape = tuple(observation_shape)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 1200),
            nn.Tanh(),
            nn.Linear(1200, 1200),
            nn.Tanh(),
            nn.Linear(1200, 1200),
            nn.Tanh(),
            nn.Linear(1200, math.prod(observation_shape)),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.observation_shape)


def pytorch_default_init_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """PyTorch's own default initialisation (what the rPU code gets), drawn from `generator`.

    Conv/transposed-conv/linear kernels: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and
    biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in as `nn.init._calculate_fan_in_and_fan_out`; BatchNorm
    weight 1, bias 0, running statistics reset. With the same seed this equals the modules' own reset_parameters()
    under `torch.manual_seed` (tests/test_rpu_network.py).
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()


def _conv_bn_relu(conv: nn.Module) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU()]


class RPUConvEncoder(nn.Module):
    """The rPU code's encoder (spec §1.2): convs 4x4 stride 2 -> 32, 32, 64, 64 (64 -> 4 spatial), 4x4 valid -> 512
    (1 x 1), 1x1 -> 2 * latent_dim; BatchNorm + ReLU on every layer but the last.

    The head's 2d channels are read as [d, 2] pairs (channel 2j = mean_j, 2j + 1 = log sigma_j), the layout of the
    reference's `view(N, z_dim, 2)`.
    """

    def __init__(self, in_channels: int = 1, latent_dim: int = 10):
        super().__init__()
        self.latent_dim = latent_dim
        self.features = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(in_channels, 32, 4, stride=2, padding=1)),  # 64 -> 32
            *_conv_bn_relu(nn.Conv2d(32, 32, 4, stride=2, padding=1)),  # 32 -> 16
            *_conv_bn_relu(nn.Conv2d(32, 64, 4, stride=2, padding=1)),  # 16 -> 8
            *_conv_bn_relu(nn.Conv2d(64, 64, 4, stride=2, padding=1)),  # 8 -> 4
            *_conv_bn_relu(nn.Conv2d(64, 512, 4)),  # 4 -> 1 (valid)
        )
        self.head = nn.Conv2d(512, 2 * latent_dim, 1)

    def mean_log_sigma(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's raw output: (mean, log sigma), each [N, d]."""
        params = self.head(self.features(x)).view(x.shape[0], self.latent_dim, 2)
        return params[..., 0], params[..., 1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) for the GaussianVAE interface: the one place where log sigma becomes
        logvar = 2 log sigma (exact in floating point, so exp(logvar / 2) is exactly the reference's sigma)."""
        mean, log_sigma = self.mean_log_sigma(x)
        return mean, 2.0 * log_sigma


class RPUConvDecoder(nn.Module):
    """The mirror image (spec §1.2): transposed convs 1x1 z -> 512, 4x4 -> 64 (4 x 4), then stride 2 64 -> 64 (8),
    64 -> 32 (16), 32 -> 32 (32), 32 -> C (64); BatchNorm + ReLU on every layer but the last; Bernoulli logits."""

    def __init__(self, out_channels: int = 1, latent_dim: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            *_conv_bn_relu(nn.ConvTranspose2d(latent_dim, 512, 1)),  # 1 x 1
            *_conv_bn_relu(nn.ConvTranspose2d(512, 64, 4)),  # 1 -> 4
            *_conv_bn_relu(nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1)),  # 4 -> 8
            *_conv_bn_relu(nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)),  # 8 -> 16
            *_conv_bn_relu(nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1)),  # 16 -> 32
            nn.ConvTranspose2d(32, out_channels, 4, stride=2, padding=1),  # 32 -> 64, logits
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], z.shape[1], 1, 1))


ARCHITECTURES = ("conv", "fc", "rpu_conv")


class GaussianVAE(nn.Module):
    """An encoder q(z|x) = N(mean, exp(logvar)) and a Bernoulli-logit decoder p(x|z)."""

    def __init__(
        self,
        observation_shape: tuple[int, int, int] = (1, 64, 64),
        latent_dim: int = 10,
        architecture: str = "conv",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
        self.observation_shape = tuple(observation_shape)
        self.latent_dim = latent_dim
        self.architecture = architecture
        if architecture in ("conv", "rpu_conv") and self.observation_shape[1:] != (64, 64):
            raise ValueError(
                f"the {architecture} architecture needs 64 x 64 observations, got {self.observation_shape}"
            )
        if architecture == "conv":
            self.encoder = ConvEncoder(self.observation_shape[0], latent_dim)
            self.decoder = DeconvDecoder(self.observation_shape[0], latent_dim)
        elif architecture == "rpu_conv":
            self.encoder = RPUConvEncoder(self.observation_shape[0], latent_dim)
            self.decoder = RPUConvDecoder(self.observation_shape[0], latent_dim)
        else:
            self.encoder = FCEncoder(self.observation_shape, latent_dim)
            self.decoder = FCDecoder(self.observation_shape, latent_dim)
        if architecture == "rpu_conv":
            pytorch_default_init_(self, generator)  # the rPU code is PyTorch and keeps PyTorch's defaults
        else:
            glorot_init_(self, generator)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance), each [N, d]."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits [N, C, H, W]."""
        return self.decoder(z)

    @staticmethod
    def reparameterize(
        mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) drawn from `generator` (spec §1.7)."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mean, logvar = self.encode(x)
        z = self.reparameterize(mean, logvar, generator)
        return mean, logvar, z, self.decode(z)
