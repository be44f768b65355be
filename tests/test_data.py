import math

import numpy as np
import pytest
import torch

from untwine.data import StoredDataset, factors_to_index, get_dataset, index_to_factors, load_dsprites_npz
from untwine.data.dsprites import FACTOR_SIZES, dsprites_dataset, official_path, render_dsprites, render_templates
from untwine.data.stored import unpack_bits
from untwine.errors import DataNotFoundError, InvalidInputError


def test_index_roundtrip_is_row_major():
    sizes = (3, 6, 40, 32, 32)
    factors = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [2, 5, 39, 31, 31], [1, 2, 3, 4, 5]])
    index = factors_to_index(factors, sizes)
    assert index.tolist()[:3] == [0, 1, 32]
    assert index[3] == math.prod(sizes) - 1
    assert index[4] == np.ravel_multi_index((1, 2, 3, 4, 5), sizes)
    assert torch.equal(index_to_factors(index, sizes), factors)


def test_procedural_grid_shape_and_order(dsprites):
    assert dsprites.factor_sizes == FACTOR_SIZES
    assert dsprites.factor_names == ("shape", "scale", "orientation", "position_x", "position_y")
    assert len(dsprites) == 737_280
    assert dsprites.storage.dtype == torch.uint8 and dsprites.storage.shape == (737_280, 512)
    factors = torch.tensor([[0, 5, 0, 0, 0], [0, 5, 0, 31, 0], [0, 5, 0, 0, 31]])
    x = dsprites.observations(factors)
    assert x.shape == (3, 1, 64, 64) and x.dtype == torch.float32
    assert set(torch.unique(x).tolist()) == {0.0, 1.0}
    # posX moves the sprite along columns by exactly 31 pixels, posY along rows
    assert torch.equal(torch.roll(x[0], 31, dims=2), x[1])
    assert torch.equal(torch.roll(x[0], 31, dims=1), x[2])
    # the sprite stays inside the image at the extreme positions
    assert x[1, 0, :, -1].sum() == 0 and x[2, 0, -1, :].sum() == 0


def test_templates_scale_and_rotation():
    t = render_templates().astype(float)  # [shape, scale, orientation, 32, 32]
    area = t.sum(axis=(3, 4)).mean(axis=2)  # mean over orientations
    assert np.all(np.diff(area, axis=1) > 0), "area grows with scale"
    ratio = area[:, -1] / area[:, 0]
    assert np.allclose(ratio, 4.0, rtol=0.15), "scale 1 vs 0.5: four times the area"
    square = t[0, -1]
    assert np.array_equal(square[0], square[10]), "square has 4-fold symmetry: 0 and 90 degrees agree"
    assert not np.array_equal(square[0], square[5]), "45 degrees differs"
    assert not np.array_equal(t[2, -1, 0], t[2, -1, 20]), "the heart is not symmetric under 180 degrees"


def test_sampling_is_seeded_and_uniform(dsprites):
    a = dsprites.sample_factors(20_000, torch.Generator().manual_seed(0))
    b = dsprites.sample_factors(20_000, torch.Generator().manual_seed(0))
    c = dsprites.sample_factors(20_000, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.int64 and a.shape == (20_000, 5)
    for k, size in enumerate(FACTOR_SIZES):
        counts = torch.bincount(a[:, k], minlength=size).float()
        assert counts.numel() == size and counts.min() > 0
        assert (counts.max() - counts.min()) / counts.mean() < 0.35
    factors, x = dsprites.sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(x, dsprites.observations(factors))


def test_bad_factors_are_rejected(dsprites):
    with pytest.raises(InvalidInputError, match="shape"):
        dsprites.observations(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="out of range"):
        dsprites.observations(torch.tensor([[3, 0, 0, 0, 0]]))
    with pytest.raises(InvalidInputError, match="integer"):
        dsprites.observations(torch.zeros(1, 5))


def test_cache_is_reused(tmp_path):
    first = render_dsprites(tmp_path)
    cache = next(tmp_path.glob("dsprites_procedural_*.npy"))
    mtime = cache.stat().st_mtime_ns
    second = render_dsprites(tmp_path)
    assert cache.stat().st_mtime_ns == mtime, "the second call loads the cache instead of rendering again"
    assert torch.equal(first.storage, second.storage)
    expected = first.storage.clone()
    del first, second  # they memory-map the cache file
    cache.write_bytes(b"corrupt")  # a corrupt cache is rendered again, not trusted
    third = render_dsprites(tmp_path)
    assert torch.equal(expected, third.storage)


def test_unpack_bits_matches_numpy():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(5, 4096), dtype=np.uint8)
    packed = torch.from_numpy(np.packbits(bits, axis=1))
    assert np.array_equal(unpack_bits(packed, 4096).numpy(), bits)


def write_official_npz(path, sizes=(1, 3, 2, 2, 4, 4), seed=0):
    """A small file in the exact layout of DeepMind's dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz."""
    rng = np.random.default_rng(seed)
    n = math.prod(sizes)
    imgs = rng.integers(0, 2, size=(n, 64, 64), dtype=np.uint8)
    classes = np.stack(np.unravel_index(np.arange(n), sizes), axis=1)
    metadata = {
        "latents_sizes": np.array(sizes),
        "latents_names": ("color", "shape", "scale", "orientation", "posX", "posY"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        imgs=imgs,
        latents_classes=classes,
        latents_values=classes.astype(float),
        metadata=np.array(metadata, dtype=object),
    )
    return imgs


def test_official_file_loader(tmp_path):
    path = official_path(tmp_path)
    imgs = write_official_npz(path)
    data = load_dsprites_npz(path)
    assert data.factor_sizes == (3, 2, 2, 4, 4)
    factors = torch.tensor([[0, 0, 0, 0, 0], [2, 1, 1, 3, 3], [1, 0, 1, 2, 3]])
    x = data.observations(factors)
    expected = imgs[np.ravel_multi_index(factors.numpy().T, (1, 3, 2, 2, 4, 4)[1:])]
    assert np.array_equal(x[:, 0].numpy(), expected.astype(np.float32))
    cached = [load_dsprites_npz(path, cache_dir=tmp_path / "cache") for _ in range(2)]  # packed once, then mapped
    assert len(list((tmp_path / "cache").glob("dsprites_official_*.npy"))) == 1
    assert torch.equal(cached[0].storage, data.storage) and torch.equal(cached[1].storage, data.storage)
    # data set resolution: "auto" and "file" use the file when it is there
    assert get_dataset("dsprites", tmp_path).factor_sizes == (3, 2, 2, 4, 4)
    assert dsprites_dataset(tmp_path, source="file").factor_sizes == (3, 2, 2, 4, 4)


def test_missing_and_corrupt_files_give_clear_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match=str(official_path(tmp_path))):
        dsprites_dataset(tmp_path, source="file")
    with pytest.raises(DataNotFoundError, match="UNTWINE_DATA"):
        dsprites_dataset(None, source="file")
    path = official_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip file")
    with pytest.raises(InvalidInputError, match="not a readable dSprites npz"):
        load_dsprites_npz(path)
    np.savez(
        path,
        imgs=np.zeros((5, 64, 64), np.uint8),
        metadata=np.array({"latents_sizes": np.array([1, 3, 6, 40, 32, 32])}, dtype=object),
    )
    with pytest.raises(InvalidInputError, match="expected \\[737280, 64, 64\\]"):
        load_dsprites_npz(path)
    with pytest.raises(InvalidInputError, match="unknown data set"):
        get_dataset("no_such_data")


def test_stored_dataset_nuisance_factors():
    grid = (2, 3)  # dimension 0 is a nuisance factor
    storage = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1) * 40
    data = StoredDataset("toy", storage, grid, ("nuisance", "f"), (1, 1, 1), latent_indices=[1])
    assert data.factor_sizes == (3,)
    g = torch.Generator().manual_seed(0)
    x = data.observations(torch.full((2000, 1), 2, dtype=torch.long), g)
    values = set((x.flatten() * 255).round().int().tolist())
    assert values == {80, 200}, "both nuisance values occur, the factor is fixed"
    with pytest.raises(InvalidInputError, match="storage holds"):
        StoredDataset("bad", storage[:5], grid, ("a", "b"), (1, 1, 1))
