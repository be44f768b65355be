"""Disentanglement metrics (spec §5): array-level functions and protocol-level `evaluate`s.

Every array-level function takes codes [N, d] and integer factors [N, K] and returns a dict keyed as in the
reference; every module's `evaluate(representation, dataset, generator, **defaults)` runs the sampling protocol.
"""

from untwine.metrics import mig as _mig_module
from untwine.metrics.mig import mig

PROTOCOLS = {"mig": _mig_module}

__all__ = ["PROTOCOLS", "mig"]
