"""Time to render the full procedural dSprites grid (737,280 images), to load it from the cache, and to draw
one training batch (64 images gathered and unpacked from the bit-packed uint8 tensor).

    python benchmarks/render_dsprites.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from common import machine, save, timed

from untwine.data.dsprites import render_dsprites, render_dsprites_packed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    info = machine()
    render = timed(render_dsprites_packed, args.repeats)
    with tempfile.TemporaryDirectory() as cache:
        first = timed(lambda: render_dsprites(cache), 1)  # renders and writes the cache
        cached = timed(lambda: render_dsprites(cache), args.repeats)  # loads the cache
        dataset = render_dsprites(cache)
    generator = torch.Generator().manual_seed(0)
    batch = timed(lambda: dataset.sample(64, generator), 200)
    payload = {
        "machine": info,
        "settings": vars(args),
        "render": render,
        "render_and_write_cache": first,
        "load_from_cache": cached,
        "sample_batch_64": {k: batch[k] for k in ("wall_s_median", "cpu_s_median")},
    }
    path = save("render_dsprites", payload)
    print(
        f"render (in memory): {render['wall_s_median']:.2f} s wall, {render['cpu_s_median']:.2f} CPU-s "
        f"(median of {args.repeats})"
    )
    print(
        f"render + write cache: {first['wall_s_median']:.2f} s; load from cache: {cached['wall_s_median']:.2f} s wall"
    )
    print(f"draw one batch of 64: {batch['wall_s_median'] * 1e6:.0f} us (median of 200)")
    print(f"load average {info['load_average_1_5_15']}; -> {path}")


if __name__ == "__main__":
    main()
