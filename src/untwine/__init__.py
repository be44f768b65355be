"""untwine: learn, evaluate and select disentangled representations.

The library is the product; the `untwine` command line is a thin skin over it.

    >>> import untwine
    >>> data = untwine.data.get_dataset("dsprites")          # procedural, offline
    >>> untwine.metrics.mig(codes, factors)["discrete_mig"]  # reference MIG on arrays
"""

from untwine._malloc import keep_freed_memory

keep_freed_memory()  # before anything allocates tensors: glibc keeps freed memory (_malloc.py; UNTWINE_MALLOC=default)

from untwine import data, metrics, nn  # noqa: E402, F401  (public subpackages)
from untwine.errors import UntwineError  # noqa: E402, F401

__version__ = "0.1.0"
