"""Networks: the reference conv encoder/decoder and the fully-connected variants (spec §1)."""

from untwine.nn.conv import ConvEncoder, DeconvDecoder, FCDecoder, FCEncoder, GaussianVAE, glorot_init_

__all__ = ["ConvEncoder", "DeconvDecoder", "FCDecoder", "FCEncoder", "GaussianVAE", "glorot_init_"]
