"""Networks: the reference conv encoder/decoder and the fully-connected variants (spec §1)."""

from untwine.nn.conv import (
    ConvEncoder,
    DeconvDecoder,
    FCDecoder,
    FCEncoder,
    GaussianVAE,
    RPUConvDecoder,
    RPUConvEncoder,
    glorot_init_,
    pytorch_default_init_,
)

__all__ = [
    "ConvEncoder",
    "DeconvDecoder",
    "FCDecoder",
    "FCEncoder",
    "GaussianVAE",
    "RPUConvDecoder",
    "RPUConvEncoder",
    "glorot_init_",
    "pytorch_default_init_",
]
