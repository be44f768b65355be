"""SmallNORB, Cars3D, Shapes3D and MPI3D read from small files written in exactly the official formats (spec §4.1).

Every image encodes its own factors (a constant grey or colour), so a batch's labels are checked pixel by pixel.
"""

import os
import warnings

import numpy as np
import pytest
import torch
from factories import (
    car_colour,
    car_image,
    grid_images,
    grid_index_of,
    norb_code,
    norb_image,
    write_cars,
    write_norb_matrix,
    write_shapes3d_h5,
    write_small_norb,
)
from PIL import Image

from untwine.cli import main
from untwine.config import TrainConfig
from untwine.data import get_dataset
from untwine.data.cars3d import load_cars3d
from untwine.data.files import npz_array
from untwine.data.mpi3d import load_mpi3d
from untwine.data.registry import availability, dataset_info, dataset_names
from untwine.data.shapes3d import load_shapes3d, read_h5
from untwine.data.smallnorb import load_smallnorb, read_norb_matrix
from untwine.errors import DataNotFoundError, InvalidInputError
from untwine.training import Trainer

NORB_SIZES = (2, 2, 2, 3, 2)  # category, instance, elevation, azimuth, lighting
SHAPES_SIZES = (2, 2, 3, 2, 2, 2)
MPI_SIZES = (2, 1, 2, 1, 2, 3, 2)


def _draw(dataset, n=64, seed=0):
    factors = dataset.sample_factors(n, torch.Generator().manual_seed(seed))
    return factors, dataset.observations(factors, torch.Generator().manual_seed(seed + 1))


def write_mpi3d(root, variant, sizes=MPI_SIZES, flat=False, compressed=False):
    folder = root / f"mpi3d_{variant}"
    folder.mkdir(parents=True, exist_ok=True)
    images = grid_images(sizes)
    if not flat:
        images = images.reshape(*sizes, 64, 64, 3)
    (np.savez_compressed if compressed else np.savez)(folder / f"mpi3d_{variant}.npz", images=images)
    return folder / f"mpi3d_{variant}.npz"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data directory holding every file-based data set in its official format (tiny grids)."""
    root = tmp_path_factory.mktemp("data")
    write_small_norb(root, NORB_SIZES)
    write_cars(root)
    (root / "3dshapes").mkdir()
    write_shapes3d_h5(root / "3dshapes" / "3dshapes.h5", SHAPES_SIZES)
    for variant in ("toy", "realistic", "real"):
        write_mpi3d(root, variant)
    (root / "scream").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 240, 3), dtype=np.uint8)).save(root / "scream" / "scream.jpg")
    return root


# --- SmallNORB ---------------------------------------------------------------------------------------------


def test_norb_matrix_header_and_data(tmp_path):
    array = np.arange(24, dtype=np.int32).reshape(6, 4)
    write_norb_matrix(tmp_path / "m.mat", array)
    raw = np.fromfile(tmp_path / "m.mat", dtype="<i4", count=5)
    assert list(raw) == [0x1E3D4C54, 2, 6, 4, 1]  # magic, ndim, dims padded to three
    assert np.array_equal(read_norb_matrix(tmp_path / "m.mat"), array)
    vector = np.arange(7, dtype=np.int32)
    write_norb_matrix(tmp_path / "v.mat", vector)
    assert (tmp_path / "v.mat").stat().st_size == 4 * (2 + 3) + 4 * 7
    assert np.array_equal(read_norb_matrix(tmp_path / "v.mat"), vector)


def test_smallnorb_conventions(tmp_path):
    write_small_norb(tmp_path, NORB_SIZES)
    norb = load_smallnorb(tmp_path, cache_dir=tmp_path / "cache")
    c, i, e, a, light = NORB_SIZES
    assert norb.factor_names == ("category", "elevation", "azimuth", "lighting")
    assert norb.factor_sizes == (c, e, a, light) and norb.observation_shape == (1, 64, 64)
    factors, x = _draw(norb, n=256)
    assert x.shape == (256, 1, 64, 64) and torch.all(x == x[:, :, :1, :1])
    grey = torch.round(x[:, 0, 0, 0] * 255).long().numpy()  # first camera (the second is 255 - code), uint8 >= 128
    assert grey.max() >= 128 and np.all(grey % 5 == 0)
    grid = np.stack(np.unravel_index(grey // 5, NORB_SIZES), axis=1)
    assert np.array_equal(grid[:, [0, 2, 3, 4]], factors.numpy())  # azimuth halved, labels match
    assert set(grid[:, 1]) == {0, 1}  # instance: a nuisance drawn per observation, from both splits
    again = norb.observations(factors, torch.Generator().manual_seed(1))
    assert torch.equal(again, x)


def test_smallnorb_is_cached_per_set_of_files(tmp_path):
    write_small_norb(tmp_path, NORB_SIZES)
    cache = tmp_path / "cache"
    first = load_smallnorb(tmp_path, cache_dir=cache)
    assert len(list(cache.glob("smallnorb_*.npy"))) == 1
    second = load_smallnorb(tmp_path, cache_dir=cache)
    assert torch.equal(first.storage, second.storage)
    write_small_norb(tmp_path, NORB_SIZES, seed=1)  # new files (other row order): a new cache entry
    info = tmp_path / "small_norb" / "smallnorb-5x46789x9x18x6x2x96x96-training-info.mat"
    os.utime(info, ns=(1, 1))
    third = load_smallnorb(tmp_path, cache_dir=cache)
    assert len(list(cache.glob("smallnorb_*.npy"))) == 2 and torch.equal(first.storage, third.storage)
    expected = third.storage.clone()
    del first, second, third  # they memory-map the cache files
    for path in cache.glob("smallnorb_*.npy"):
        path.write_bytes(b"corrupt")  # a damaged cache is rebuilt, not trusted
    assert torch.equal(load_smallnorb(tmp_path, cache_dir=cache).storage, expected)


def test_smallnorb_bad_files(tmp_path):
    with pytest.raises(DataNotFoundError, match="small_norb"):
        load_smallnorb(tmp_path)
    write_small_norb(tmp_path, NORB_SIZES)
    folder = tmp_path / "small_norb"
    dat = folder / "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat"
    dat.write_bytes(dat.read_bytes()[:-100])
    with pytest.raises(InvalidInputError, match="bytes"):
        load_smallnorb(tmp_path, use_cache=False)
    dat.write_bytes(b"\x00" * 64)
    with pytest.raises(InvalidInputError, match="magic"):
        load_smallnorb(tmp_path, use_cache=False)
    write_small_norb(tmp_path, NORB_SIZES)
    info = folder / "smallnorb-5x46789x9x18x6x2x96x96-training-info.mat"
    rows = read_norb_matrix(info).copy()
    rows[0] = rows[1]  # a repeated combination, another one missing
    write_norb_matrix(info, rows)
    with pytest.raises(InvalidInputError, match="do not cover"):
        load_smallnorb(tmp_path, use_cache=False)


# --- Cars3D ------------------------------------------------------------------------------------------------


def test_cars3d_conventions(tmp_path):
    names = write_cars(tmp_path)
    with pytest.warns(UserWarning, match="183"):
        cars = load_cars3d(tmp_path, cache_dir=tmp_path / "cache")
    assert cars.factor_names == ("elevation", "azimuth", "object") and cars.factor_sizes == (4, 24, len(names))
    factors, x = _draw(cars, n=128)
    assert x.shape == (128, 3, 64, 64) and torch.all(x == x[:, :, :1, :1])
    colours = torch.round(x[:, :, 0, 0] * 255).long()
    expected = torch.tensor([car_colour(*f) for f in factors.tolist()])
    assert torch.equal(colours, expected)  # elevation, azimuth and object (sorted file names) all labelled right
    assert x.is_contiguous(memory_format=torch.channels_last)


def lanczos_64(image: np.ndarray) -> np.ndarray:
    """The reference's preprocessing, written independently: PIL's Lanczos (ANTIALIAS) resize to 64 x 64, / 255."""
    return np.asarray(Image.fromarray(image).resize((64, 64), Image.LANCZOS), dtype=np.float32) / 255.0


def test_cars3d_images_are_the_lanczos_resized_originals(tmp_path):
    write_cars(tmp_path, names=("b.mat", "a.mat"), structured=True)
    with pytest.warns(UserWarning, match="183"):
        cars = load_cars3d(tmp_path, cache_dir=tmp_path / "cache")
    factors, x = _draw(cars, n=24)
    for (elevation, azimuth, obj), observation in zip(factors.tolist(), x):
        expected = lanczos_64(car_image(elevation, azimuth, obj))  # [64, 64, 3], rows first as in the file
        assert np.allclose(observation.permute(1, 2, 0).numpy(), expected, atol=1e-6), (elevation, azimuth, obj)


def test_smallnorb_images_are_the_lanczos_resized_first_camera(tmp_path):
    write_small_norb(tmp_path, NORB_SIZES, structured=True)
    norb = load_smallnorb(tmp_path, cache_dir=tmp_path / "cache")
    factors, x = _draw(norb, n=24)
    for (category, elevation, azimuth, lighting), observation in zip(factors.tolist(), x):
        # the instance is a nuisance drawn per observation: the image is one of its instances' images
        candidates = [
            lanczos_64(norb_image(norb_code(category, i, elevation, azimuth, lighting, NORB_SIZES), True))
            for i in range(NORB_SIZES[1])
        ]
        assert any(np.allclose(observation[0].numpy(), c, atol=1e-6) for c in candidates)


def test_cars3d_bad_files(tmp_path):
    with pytest.raises(DataNotFoundError, match="cars"):
        load_cars3d(tmp_path)
    write_cars(tmp_path, names=("a.mat",))
    (tmp_path / "cars" / "b.mat").write_bytes(b"not a mat file")
    # every file's header is checked first: a foreign file is an error, with no "2 files found" warning before it
    with pytest.raises(InvalidInputError, match="b.mat"), warnings.catch_warnings():
        warnings.simplefilter("error")
        load_cars3d(tmp_path, use_cache=False)
    from scipy.io import savemat

    savemat(tmp_path / "cars" / "b.mat", {"im": np.zeros((128, 128, 3, 24, 3), dtype=np.uint8)})
    with pytest.raises(InvalidInputError, match="shape"), warnings.catch_warnings():
        warnings.simplefilter("error")
        load_cars3d(tmp_path, use_cache=False)


# --- Shapes3D ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [True, False])
def test_shapes3d_h5(tmp_path, compressed):
    (tmp_path / "3dshapes").mkdir()
    write_shapes3d_h5(tmp_path / "3dshapes" / "3dshapes.h5", SHAPES_SIZES, compressed=compressed)
    shapes = load_shapes3d(tmp_path, cache_dir=tmp_path / "cache")
    assert shapes.factor_sizes == SHAPES_SIZES and len(shapes.factor_names) == 6
    factors, x = _draw(shapes)
    assert np.array_equal(grid_index_of(x), np.ravel_multi_index(factors.numpy().T, SHAPES_SIZES))
    images, sizes = read_h5(tmp_path / "3dshapes" / "3dshapes.h5", cache_dir=tmp_path / "cache")
    assert isinstance(images, np.memmap) and sizes == SHAPES_SIZES  # memory-mapped: in place, or from the cache
    cached = list((tmp_path / "cache").glob("shapes3d_*.npy"))
    assert len(cached) == (1 if compressed else 0)  # compressed images are decompressed into the cache once
    assert torch.equal(torch.from_numpy(np.asarray(images)), shapes.storage)


def test_shapes3d_reordered_labels_are_refused(tmp_path):
    (tmp_path / "3dshapes").mkdir()
    order = np.random.default_rng(0).permutation(int(np.prod(SHAPES_SIZES)))
    write_shapes3d_h5(tmp_path / "3dshapes" / "3dshapes.h5", SHAPES_SIZES, order=order)
    with pytest.raises(InvalidInputError, match="row-major"):
        load_shapes3d(tmp_path)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_shapes3d_reference_npz_layout(tmp_path, save):
    (tmp_path / "3dshapes").mkdir()
    images = grid_images(SHAPES_SIZES).reshape(*SHAPES_SIZES, 64, 64, 3)
    write_shapes3d_h5(tmp_path / "3dshapes" / "3dshapes.h5", (1, 1, 1, 1, 1, 2))  # the npz takes precedence
    from untwine.data.shapes3d import NPZ_FILENAME

    save(tmp_path / "3dshapes" / NPZ_FILENAME, images=images, labels=np.zeros(1))
    shapes = load_shapes3d(tmp_path)
    factors, x = _draw(shapes)
    assert shapes.factor_sizes == SHAPES_SIZES
    assert np.array_equal(grid_index_of(x), np.ravel_multi_index(factors.numpy().T, SHAPES_SIZES))


def test_shapes3d_missing_and_corrupt(tmp_path):
    with pytest.raises(DataNotFoundError, match="3dshapes.h5"):
        load_shapes3d(tmp_path)
    (tmp_path / "3dshapes").mkdir()
    (tmp_path / "3dshapes" / "3dshapes.h5").write_bytes(b"garbage" * 100)
    with pytest.raises(InvalidInputError, match="HDF5"):
        load_shapes3d(tmp_path)


# --- MPI3D -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
def test_mpi3d_grid_layout(tmp_path, compressed):
    write_mpi3d(tmp_path, "real", compressed=compressed)
    mpi = load_mpi3d("real", tmp_path, cache_dir=tmp_path / "cache")
    assert mpi.name == "mpi3d_real" and mpi.factor_sizes == MPI_SIZES and len(mpi.factor_names) == 7
    factors, x = _draw(mpi)
    assert np.array_equal(grid_index_of(x), np.ravel_multi_index(factors.numpy().T, MPI_SIZES))


def test_mpi3d_flat_layout_needs_a_known_count(tmp_path):
    write_mpi3d(tmp_path, "toy", flat=True)
    with pytest.raises(InvalidInputError, match="460,800 or 1,036,800"):
        load_mpi3d("toy", tmp_path)
    mpi = load_mpi3d("toy", tmp_path, factor_sizes=MPI_SIZES)
    factors, x = _draw(mpi)
    assert np.array_equal(grid_index_of(x), np.ravel_multi_index(factors.numpy().T, MPI_SIZES))
    with pytest.raises(InvalidInputError, match="unknown MPI3D variant"):
        load_mpi3d("complex", tmp_path)
    with pytest.raises(DataNotFoundError, match="mpi3d_realistic.npz"):
        load_mpi3d("realistic", tmp_path)


def test_an_unwritable_cache_warns_and_loses_nothing(tmp_path):
    write_small_norb(tmp_path, NORB_SIZES)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    with pytest.warns(UserWarning, match="could not cache smallnorb"):
        norb = load_smallnorb(tmp_path, cache_dir=blocker)
    assert torch.equal(norb.storage, load_smallnorb(tmp_path, use_cache=False).storage)


def test_npz_member_memory_map_and_truncation(tmp_path):
    array = np.arange(3 * 64 * 64 * 3, dtype=np.uint8).reshape(3, 64, 64, 3)
    np.savez(tmp_path / "a.npz", images=array, other=np.ones(3))
    mapped = npz_array(tmp_path / "a.npz", "images")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, array)
    np.savez_compressed(tmp_path / "b.npz", images=array)
    loaded = npz_array(tmp_path / "b.npz", "images")
    assert not isinstance(loaded, np.memmap) and np.array_equal(loaded, array)
    for _ in range(2):  # decompressed into the cache once, memory-mapped from there afterwards
        cached = npz_array(tmp_path / "b.npz", "images", "b", tmp_path / "cache")
        assert np.array_equal(cached, array) and len(list((tmp_path / "cache").glob("b_*.npy"))) == 1
    assert isinstance(cached, np.memmap)
    with pytest.raises(InvalidInputError, match="no array 'labels'"):
        npz_array(tmp_path / "a.npz", "labels")
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "c.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match="npz"):
        npz_array(tmp_path / "c.npz", "images")


# --- every data set by name ---------------------------------------------------------------------------------


def test_every_data_set_is_available_with_its_files(data_dir):
    assert len(dataset_names()) == 12
    for name in dataset_names():
        usable, how = availability(name, data_dir)
        assert usable, (name, how)
        if name not in ("dsprites", "color_dsprites", "noisy_dsprites", "dsprites_noshape", "dummy_data"):
            assert how == "files found", name
    usable, how = availability("cars3d", data_dir / "nowhere")
    assert not usable and "cars" in how


@pytest.mark.parametrize("name", ["smallnorb", "cars3d", "shapes3d", "mpi3d_toy", "mpi3d_realistic", "mpi3d_real"])
def test_every_file_data_set_builds_by_name(name, data_dir, recwarn):
    dataset = get_dataset(name, data_dir)
    info = dataset_info(name)
    factors, x = _draw(dataset, n=8)
    assert x.shape == (8, *info.observation_shape) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and factors.shape == (8, len(info.factor_names))
    assert dataset.factor_names == info.factor_names
    with pytest.raises(InvalidInputError, match="read from files"):
        get_dataset(name, data_dir, source="procedural")


@pytest.mark.parametrize("name", ["smallnorb", "cars3d", "shapes3d", "mpi3d_real"])
def test_file_data_sets_train(name, data_dir, tmp_path, recwarn):
    config = TrainConfig(dataset=name, data_dir=str(data_dir), steps=2, batch_size=4, architecture="conv")
    summary = Trainer(config, tmp_path / "run").train()
    assert summary["train.global_step"] == 2 and np.isfinite(summary["train.loss"])


@pytest.mark.filterwarnings("ignore:cars3d")
def test_cli_list_show_and_train(data_dir, tmp_path, capsys):
    assert main(["datasets", "list", "--data-dir", str(data_dir)]) == 0
    listed = capsys.readouterr().out
    assert "mpi3d_real" in listed and "smallnorb" in listed and "no:" not in listed
    sheet = tmp_path / "norb.png"
    assert main(["datasets", "show", "smallnorb", "--data-dir", str(data_dir), "-o", str(sheet)]) == 0
    with Image.open(sheet) as image:
        assert image.height > 4 * 64  # one row per factor
    run = tmp_path / "run"
    argv = ["train", "--dataset", "cars3d", "--data-dir", str(data_dir), "--steps", "2", "--out", str(run)]
    assert main([*argv, "--batch-size", "4"]) == 0
    cache = tmp_path / "cache"
    assert main(["datasets", "render", "smallnorb", "--data-dir", str(data_dir), "--cache-dir", str(cache)]) == 0
    assert len(list(cache.glob("smallnorb_*.npy"))) == 1  # preprocessed once, memory-mapped afterwards
    assert main(["datasets", "show", "nope"]) == 2


def test_grid_images_decode():
    sizes = (3, 200, 2)
    images = torch.from_numpy(grid_images(sizes)).permute(0, 3, 1, 2).float() / 255
    assert np.array_equal(grid_index_of(images), np.arange(1200))


def test_cars3d_reference_listing_order(data_dir, recwarn):
    listing = [n for n in os.listdir(data_dir / "cars") if ".mat" in n]
    cars = get_dataset("cars3d", data_dir, object_order="listing")
    factors = torch.tensor([[1, 2, k] for k in range(3)])
    colours = torch.round(cars.observations(factors)[:, :, 0, 0] * 255).long()
    sorted_names = sorted(listing)
    for k, name in enumerate(listing):  # object k is the k-th listed file, whose colour encodes its sorted position
        assert colours[k].tolist() == list(car_colour(1, 2, sorted_names.index(name)))
    with pytest.raises(InvalidInputError, match="object_order"):
        get_dataset("cars3d", data_dir, object_order="random")
    with pytest.raises(InvalidInputError, match="has no option 'colour'; its options: object_order"):
        get_dataset("cars3d", data_dir, colour=1)
    with pytest.raises(InvalidInputError, match="its options: none"):
        get_dataset("dsprites", data_dir, object_order="listing")


def test_dataset_options_reach_training(tmp_path):
    write_mpi3d(tmp_path, "toy", flat=True)
    run = tmp_path / "run"
    sizes = ",".join(map(str, MPI_SIZES))
    argv = ["train", "--dataset", "mpi3d_toy", "--data-dir", str(tmp_path), "--steps", "1", "--batch-size", "2"]
    assert main([*argv, "--out", str(tmp_path / "bad")]) == 2  # the flat file needs its grid
    assert main([*argv, "--out", str(run), "--dataset-option", f"factor_sizes={sizes}"]) == 0
    config = TrainConfig.read(run / "config.toml")
    assert config.dataset_options == {"factor_sizes": list(MPI_SIZES)}
    assert main([*argv, "--out", str(tmp_path / "x"), "--dataset-option", "sizes"]) == 2  # not key=value


def test_a_resumed_run_on_file_data_draws_the_same_batches(data_dir, tmp_path):
    """SmallNORB's instance is drawn per observation from the data generator, which the checkpoint carries."""
    from safetensors.torch import load_file

    from untwine.runs import RunDir

    small = dict(dataset="smallnorb", data_dir=str(data_dir), batch_size=4, architecture="fc", checkpoint_every=3)
    Trainer(TrainConfig(steps=6, **small), tmp_path / "straight").train()
    Trainer(TrainConfig(steps=3, **small), tmp_path / "resumed").train()
    Trainer(TrainConfig(steps=6, **small), tmp_path / "resumed").train(resume=True)
    a, b = (RunDir(tmp_path / r).checkpoint_path("final") / "model.safetensors" for r in ("straight", "resumed"))
    a, b = load_file(a), load_file(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
