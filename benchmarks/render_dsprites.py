"""Time to render the full procedural dSprites grid (737,280 images), and to load it from the cache.

    python benchmarks/render_dsprites.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile

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
    payload = {"machine": info, "settings": vars(args), "render": render, "render_and_write_cache": first, "load_from_cache": cached}
    path = save("render_dsprites", payload)
    print(f"render (in memory): {render['wall_s_median']:.2f} s wall, {render['cpu_s_median']:.2f} CPU-s (median of {args.repeats})")
    print(f"render + write cache: {first['wall_s_median']:.2f} s; load from cache: {cached['wall_s_median']:.2f} s wall")
    print(f"load average {info['load_average_1_5_15']}; -> {path}")


if __name__ == "__main__":
    main()
