"""Sampling throughput of every data set: images per second from `dataset.sample(batch, generator)` into a float
batch on the training device (factors drawn, nuisance factors and appearance drawn, images gathered from the
uint8 storage and converted).

Data sets read from files are measured on synthetic stand-ins of the real sizes (uint8 storage of the official
grid and layout, built with the same StoredDataset the loaders return); with --data-dir, data sets whose files are
found there are loaded from them instead (load time reported). dSprites and its variants use the procedural grid.

    python benchmarks/sample_throughput.py [--device cpu|cuda] [--batch-sizes 64,256] [--datasets a,b]
"""

from __future__ import annotations

import argparse
import gc
import time

import torch
from common import machine, save

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
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    walls.sort()
    cpus.sort()
    wall, cpu = walls[len(walls) // 2], cpus[len(cpus) // 2]
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
    args = parser.parse_args()
    device = torch.device(args.device)
    info = machine()
    results = {}
    for name in args.datasets.split(","):
        dataset, source, load_s = build(name, args.data_dir)
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
    path = save(f"sample_throughput_{device.type}", {"machine": info, "settings": vars(args), "results": results})
    print(f"load average {info['load_average_1_5_15']}; -> {path}")


if __name__ == "__main__":
    main()
