"""Training curves from `log.jsonl` records, drawn with matplotlib's Agg renderer (no display, no pyplot state)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.figure import Figure

QUANTITIES = ("loss", "reconstruction_loss", "kl_loss", "regularizer", "elbo")


def _series(records: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the records that hold a finite number under `key`."""
    steps, values = [], []
    for record in records:
        value, step = record.get(key), record.get("step")
        if isinstance(value, (int, float)) and isinstance(step, (int, float)) and math.isfinite(value):
            steps.append(step)
            values.append(value)
    return steps, values


def training_curves(log_records: Sequence[dict], quantities: Sequence[str] = QUANTITIES) -> bytes:
    """PNG bytes: one small panel per logged quantity (loss, reconstruction_loss, kl_loss, regularizer, elbo —
    whichever are present) against the training step."""
    panels = [(key, *_series(log_records, key)) for key in quantities]
    panels = [p for p in panels if p[1]]
    cols = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig = Figure(figsize=(4.0 * cols, 2.8 * rows), dpi=100, layout="constrained")
    if not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no training log records", ha="center", va="center", color="0.4")
        ax.set_axis_off()
    for i, (key, steps, values) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(steps, values, color="#1f5fa8", linewidth=1.2, marker="." if len(steps) < 30 else None)
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, color="0.9")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
