"""Reading the official data files: clear errors, memory-mapped arrays, and a cache of preprocessed images.

- `require(path, what, where)`: the file, or a DataNotFoundError saying where to put it.
- `npz_array(path, key)`: one array of an .npz, memory-mapped when the member is stored uncompressed
  (`np.savez`); a compressed member (`np.savez_compressed`) is decompressed once into the cache.
- `cached_images(...)`: images preprocessed once (resized with Lanczos, as the reference) and kept as an .npy
  in the cache directory, keyed by the source files' names, sizes and modification times; later runs
  memory-map it instead of resizing again.
- `probing()`: within it, loaders check their files as for loading but skip reading and preprocessing the images
  (`cached_images` returns a placeholder); `untwine datasets list` validates availability this way.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from untwine.errors import DataNotFoundError, InvalidInputError


def default_cache_dir() -> Path:
    """Where rendered and preprocessed data sets are cached: $UNTWINE_CACHE, else ~/.cache/untwine."""
    return Path(os.environ.get("UNTWINE_CACHE") or Path.home() / ".cache" / "untwine")


def data_root(data_dir: str | Path | None, dataset: str) -> Path:
    """The data directory, or an error saying how to give one."""
    if data_dir is None:
        raise DataNotFoundError(f"{dataset} is read from files: set --data-dir or UNTWINE_DATA to their directory")
    return Path(data_dir)


def require(path: Path, dataset: str, where: str) -> Path:
    """`path` if it is a file, else a DataNotFoundError naming the expected place (`where`)."""
    if not path.is_file():
        raise DataNotFoundError(f"{dataset}: {path} not found; put {where}")
    return path


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """np.save to a temporary file, then rename: a killed process never leaves a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype, bool]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    return shape, dtype, fortran


def _load_npz_member(path: Path, key: str) -> np.ndarray:
    with np.load(path) as npz:
        return npz[key]


def npz_array(
    path: Path, key: str, cache_name: str | None = None, cache_dir: str | Path | None = None, use_cache: bool = True
) -> np.ndarray:
    """Array `key` of the .npz at `path`, memory-mapped (copy-on-write) when the member is stored uncompressed.

    A compressed member is read into memory or, given `cache_name`, decompressed once into the cache and
    memory-mapped from there (later loads are instant and concurrent runs share the pages).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{key}.npy")
            with archive.open(info) as member:
                shape, dtype, fortran = _npy_header(member)
                header_size = member.tell()
            if dtype.hasobject:
                raise InvalidInputError(f"{path}: {key} holds Python objects, not an image array")
            if info.compress_type == zipfile.ZIP_STORED:
                with open(path, "rb") as raw:  # the member's data start: local header + name + extra field
                    raw.seek(info.header_offset + 26)
                    name_len, extra_len = np.frombuffer(raw.read(4), dtype="<u2")
                offset = info.header_offset + 30 + int(name_len) + int(extra_len) + header_size
                expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if expected > path.stat().st_size:
                    raise InvalidInputError(f"{path} is truncated: {key} needs {expected} bytes")
                return np.memmap(path, dtype, "c", offset, shape, order="F" if fortran else "C")
        if cache_name is None or dtype != np.uint8:
            return _load_npz_member(path, key)
        build = functools.partial(_load_npz_member, path, key)
        return cached_images(cache_name, [path], 1, build, shape, cache_dir, use_cache)
    except KeyError:
        raise InvalidInputError(f"{path} has no array {key!r}") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"{path} is not a readable .npz ({type(exc).__name__}: {exc})") from exc


def files_key(paths: Sequence[Path], version: int) -> str:
    """A short hash of the files' names, sizes and modification times, and the preprocessing version."""
    digest = hashlib.sha256(str(version).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


_PROBING = contextvars.ContextVar("untwine_probing", default=False)


@contextlib.contextmanager
def probing():
    """Check data sets without reading their images: `cached_images` returns an all-zero placeholder of the right
    shape (no memory) instead of building or loading the array. Every check a loader makes before that still runs."""
    token = _PROBING.set(True)
    try:
        yield
    finally:
        _PROBING.reset(token)


def cached_images(
    name: str,
    sources: Sequence[Path],
    version: int,
    build: Callable[[], np.ndarray],
    shape: Sequence[int],
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> np.ndarray:
    """`build()`'s uint8 array of `shape`, saved once per set of source files and memory-mapped on later calls."""
    if _PROBING.get():
        zero = np.zeros(1, dtype=np.uint8)
        return np.lib.stride_tricks.as_strided(zero, tuple(shape), (0,) * len(shape), writeable=True)
    path = Path(cache_dir or default_cache_dir()) / f"{name}_{files_key(sources, version)}.npy"
    if use_cache and path.exists():
        try:
            cached = np.load(path, mmap_mode="c")
            if cached.shape == tuple(shape) and cached.dtype == np.uint8:
                return cached
        except (OSError, ValueError):
            pass  # a corrupt or foreign cache is rebuilt
    array = build()
    if use_cache:
        try:
            atomic_save_npy(path, array)
        except OSError as exc:  # e.g. a full disk: the data are still good, only not cached
            warnings.warn(f"could not cache {name} in {path.parent} ({exc}); set UNTWINE_CACHE elsewhere", stacklevel=3)
    return array


def resize_lanczos(images: np.ndarray, size: int = 64) -> np.ndarray:
    """uint8 images [n, H, W] or [n, H, W, 3] resized to size x size with PIL's Lanczos filter (the reference's
    ANTIALIAS; for square images `thumbnail` does the same)."""
    from PIL import Image

    out = np.empty((images.shape[0], size, size, *images.shape[3:]), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.LANCZOS))
    return out
