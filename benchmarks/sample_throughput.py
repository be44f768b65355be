"""Sampling throughput of every data set: images per second from `dataset.sample(batch, generator)` into a float
batch on the training device (factors drawn, nuisance factors and appearance drawn, images gathered from the
uint8 storage and converted).

Data sets read from files are measured on synthetic stand-ins of the real sizes (uint8 storage of the official
grid and layout, built with the same StoredDataset the loaders return); with --data-dir, data sets whose files are
found there are loaded from them instead (load time reported). dSprites and its variants use the procedural grid.

    python benchmarks/sample_throughput.py [--device cpu|cuda] [--batch-sizes 64,256] [--datasets a,b]
    python benchmarks/sample_throughput.py --write-files /tmp/standins --datasets smallnorb,cars3d,shapes3d,mpi3d_toy

--write-files DIR first writes real-size files in the official formats (with the tests' writers: SmallNORB's
NORB matrices, 183 Cars3D .mat files, a gzip-chunked 3dshapes.h5, a flat uncompressed mpi3d_toy.npz; ~13 GB)
and then loads them from DIR, so load and preprocessing times and memory-mapped sampling are measured too.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, save, timed

from untwine.data import StoredDataset, cars3d, get_dataset, mpi3d, shapes3d, smallnorb
from untwine.data.registry import availability, dataset_names
from untwine.data.variants import ScreamDSprites


def _uint8(shape) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.uint8)  # content does not change the cost; zeros commit the pages


def stand_in(name: str) -> StoredDataset:
    """A data set of the real size and layout, with synthetic pixels."""
    if name == "smallnorb":
        grid = smallnorb.GRID_SIZES
        return StoredDataset(
            name, _uint8((48_600, 1, 64, 64)), grid, smallnorb.GRID_NAMES, (1, 64, 64), latent_indices=(0, 2, 3, 4)
        )
    if name == "cars3d":
        sizes, names = cars3d.FACTOR_SIZES, cars3d.FACTOR_NAMES
    elif name == "shapes3d":
        sizes, names = shapes3d.FACTOR_SIZES, shapes3d.FACTOR_NAMES
    else:
        sizes, names = mpi3d.REFERENCE_SIZES[name.removeprefix("mpi3d_")], mpi3d.FACTOR_NAMES
    n = 1
    for s in sizes:
        n *= s
    return StoredDataset(name, _uint8((n, 64, 64, 3)), sizes, names, (3, 64, 64), channels_last=True)


def write_files(root: Path, names: list[str]) -> dict:
    """Real-size files in the official formats, written with the tests' writers; seconds per data set."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import factories

    seconds = {}
    for name in names:
        start = time.perf_counter()
        if name == "smallnorb":
            factories.write_small_norb(root, smallnorb.GRID_SIZES)
        elif name == "cars3d":
            factories.write_cars(root, names=[f"car_{i:03d}.mat" for i in range(cars3d.FACTOR_SIZES[2])])
        elif name == "shapes3d":
            (root / "3dshapes").mkdir(parents=True, exist_ok=True)
            factories.write_shapes3d_h5(root / "3dshapes" / shapes3d.H5_FILENAME, shapes3d.FACTOR_SIZES)
        elif name.startswith("mpi3d_"):
            variant = name.removeprefix("mpi3d_")
            (root / f"mpi3d_{variant}").mkdir(parents=True, exist_ok=True)
            images = factories.grid_images(mpi3d.REFERENCE_SIZES[variant])
            np.savez(root / mpi3d.relative_path(variant), images=images)
            del images
        else:
            continue
        seconds[name] = time.perf_counter() - start
        print(f"wrote {name} files in {seconds[name]:.0f} s", flush=True)
    return seconds


def build(name: str, data_dir: str | None) -> tuple[object, str, float]:
    start = time.perf_counter()
    if data_dir and availability(name, data_dir)[1] == "files found":
        return get_dataset(name, data_dir), "files", time.perf_counter() - start
    if name == "scream_dsprites":
        painting = torch.rand(3, 274, 221, generator=torch.Generator().manual_seed(0))
        return ScreamDSprites(get_dataset("dsprites"), painting), "procedural + synthetic painting", 0.0
    if name in ("dsprites", "color_dsprites", "noisy_dsprites", "dsprites_noshape"):
        return get_dataset(name), "procedural", time.perf_counter() - start
    return stand_in(name), "synthetic stand-in", time.perf_counter() - start


def throughput(dataset, batch: int, device: torch.device, batches: int, repeats: int) -> dict:
    generator = torch.Generator(device=device).manual_seed(0)

    def run():
        for _ in range(batches):
            _, x = dataset.sample(batch, generator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return x

    x = run()  # warm-up
    assert x.dtype == torch.float32 and x.shape[1:] == tuple(dataset.observation_shape)
    measured = timed(run, repeats)
    wall, cpu = measured["wall_s_median"], measured["cpu_s_median"]
    return {
        "images_per_s": batches * batch / wall,
        "images_per_cpu_s": batches * batch / cpu,
        "wall_s_median": wall,
        "cpu_s_median": cpu,
        "batches_per_repeat": batches,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--datasets", default=",".join(dataset_names()))
    parser.add_argument("--data-dir", default=None, help="load data sets whose files are found here")
    parser.add_argument("--images-per-repeat", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write-files", default=None, help="write real-size official files here, then load them")
    args = parser.parse_args()
    device = torch.device(args.device)
    info = machine()
    names = args.datasets.split(",")
    results = {}
    if args.write_files:
        args.data_dir = args.write_files
        results["write_files_s"] = write_files(Path(args.write_files), names)
    for name in names:
        dataset, source, load_s = build(name, args.data_dir)
        if source == "files":  # a second load: the preprocessing cache, memory-mapped files
            del dataset
            gc.collect()
            again = time.perf_counter()
            dataset = get_dataset(name, args.data_dir)
            results[f"{name}_second_load_s"] = time.perf_counter() - again
            print(f"{name}: first load {load_s:.1f} s, second load {results[f'{name}_second_load_s']:.1f} s")
        move = time.perf_counter()
        dataset.to(device)
        move_s = time.perf_counter() - move
        results[name] = {"source": source, "load_s": load_s, "to_device_s": move_s, "batches": {}}
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            measured = throughput(dataset, batch, device, max(1, args.images_per_repeat // batch), args.repeats)
            results[name]["batches"][batch] = measured
            print(
                f"{name:17s} batch {batch:4d}: {measured['images_per_s']:>10,.0f} images/s "
                f"({measured['images_per_cpu_s']:>10,.0f} per CPU-s)  [{source}]",
                flush=True,
            )
        del dataset
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    suffix = "_files" if args.data_dir else ""
    path = save(
        f"sample_throughput_{device.type}{suffix}", {"machine": info, "settings": vars(args), "results": results}
    )
    print(f"load average {info['load_average_1_5_15']}; -> {path}")


if __name__ == "__main__":
    main()
