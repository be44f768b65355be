"""Shared fixtures. Every test makes its own data; the procedural dSprites cache lives in a per-session folder."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Point $UNTWINE_CACHE (and hence subprocesses) at a fresh folder; unset $UNTWINE_DATA."""
    cache = tmp_path_factory.mktemp("untwine-cache")
    old = {k: os.environ.get(k) for k in ("UNTWINE_CACHE", "UNTWINE_DATA")}
    os.environ["UNTWINE_CACHE"] = str(cache)
    os.environ.pop("UNTWINE_DATA", None)
    yield cache
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def dsprites():
    """The procedural dSprites grid (rendered once per test session, ~2 s)."""
    from untwine.data import get_dataset

    return get_dataset("dsprites")


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)
