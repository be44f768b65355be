"""Visualisation (spec §8.1): model images, training curves, and the self-contained HTML report of a run."""

from untwine.viz.images import (
    best_num_rows,
    decode_images,
    encode_means,
    fixed_interval_cycle,
    reconstructions,
    samples,
    save_gif,
    save_png,
    square_grid,
    tile,
    to_uint8,
    traversal_frames,
    traversal_grid,
    triangle_positions,
)
from untwine.viz.plots import training_curves
from untwine.viz.report import figure_paths, render_report, write_figures, write_report

__all__ = [
    "best_num_rows",
    "decode_images",
    "encode_means",
    "figure_paths",
    "fixed_interval_cycle",
    "reconstructions",
    "render_report",
    "samples",
    "save_gif",
    "save_png",
    "square_grid",
    "tile",
    "to_uint8",
    "training_curves",
    "traversal_frames",
    "traversal_grid",
    "triangle_positions",
    "write_figures",
    "write_report",
]
