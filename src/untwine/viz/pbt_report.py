"""The report of a PBT run (P/report.png and P/report.html) from its per-generation rows in P/study.sqlite:
the population's fitness per generation, the hyperparameter schedules (lr, batch size, beta) of every member, and
the lineage (who copied whom at each exploit), with a per-generation table. For rPU-VAE, `rpu_levels_table` lists
each level's labelled subset and the true factors it holds fixed (R/rpu.json)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np


def generation_table(records) -> list[dict]:
    """One row per generation: best member and fitness, median fitness, population size, exploits, stop."""
    rows = []
    fitness = records[records.key == "fitness"]
    exploits = records[records.key == "exploit"]
    for _, g in records[records.key == "generation"].iterrows():
        step = int(g.step)
        scores = fitness[fitness.step == step].value.astype(float)
        moves = [f"{row.model_id}<-m{row.value['source']}" for _, row in exploits[exploits.step == step].iterrows()]
        rows.append(
            {
                "generation": step,
                "members": int(len(scores)),
                "best": f"m{g.value['best']}",
                "best_fitness": round(float(g.value["best_score"]), 4),
                "median_fitness": round(float(np.median(scores)), 4) if len(scores) else float("nan"),
                "exploits": ", ".join(moves),
                "stop": g.value.get("stop") or "",
                "wall_s": round(float(g.value.get("wall_s", float("nan"))), 1),
            }
        )
    return rows


def _wide(records, key: str):
    part = records[records.key == key]
    return part.pivot_table(index="step", columns="model_id", values="value", aggfunc="last").astype(float)


def plot_pbt(records, path: str | Path, title: str = "PBT") -> Path:
    """Four panels: fitness (every member, best line), lr, batch size and beta per member, and the lineage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    fitness = _wide(records, "fitness")
    for member in fitness.columns:
        axes[0].plot(fitness.index, fitness[member], "o-", alpha=0.4, lw=0.8)
    axes[0].plot(fitness.index, fitness.max(axis=1), "k-", lw=2, label="best")
    axes[0].set(title=f"{title}: fitness", xlabel="generation")
    axes[0].legend()
    for ax, key, log in zip(axes[1:4], ("lr", "batch_size", "beta"), (True, True, True)):
        wide = _wide(records, key)
        for member in wide.columns:
            ax.plot(wide.index, wide[member], ".-", alpha=0.6, lw=0.8)
        ax.set(title=key, xlabel="generation", yscale="log" if log else "linear")
    ax = axes[4]
    members = sorted({m for m in records.model_id.dropna()}, key=lambda m: int(m[1:]))
    y = {m: i for i, m in enumerate(members)}
    steps = sorted(records.step.dropna().unique())
    for m in members:
        ax.plot(steps, [y[m]] * len(steps), color="0.85", lw=0.5)
    for _, row in records[records.key == "exploit"].iterrows():
        source, target = f"m{row.value['source']}", row.model_id
        ax.annotate(
            "", xy=(row.step + 1, y[target]), xytext=(row.step, y[source]), arrowprops={"arrowstyle": "->", "lw": 1}
        )
    ax.set(title="lineage (source -> copy)", xlabel="generation", yticks=range(len(members)), yticklabels=members)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _table_html(rows: list[dict]) -> str:
    if not rows:
        return "<p>no rows</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table border='1' cellspacing='0' cellpadding='3'><tr>{head}</tr>{body}</table>"


def write_pbt_report(out: str | Path, extra_sections: dict[str, list[dict]] | None = None) -> Path:
    """P/report.png and P/report.html (the figure inline, the generation table, any extra tables)."""
    from untwine.selection.pbt import load_records

    out = Path(out)
    records = load_records(out)
    png = plot_pbt(records, out / "report.png", title=out.name)
    image = base64.b64encode(png.read_bytes()).decode()
    parts = [
        f"<html><head><meta charset='utf-8'><title>PBT {html.escape(out.name)}</title></head><body>",
        f"<h1>PBT run {html.escape(out.name)}</h1>",
        f"<img alt='fitness, hyperparameters and lineage' src='data:image/png;base64,{image}'>",
        "<h2>Generations</h2>",
        _table_html(generation_table(records)),
    ]
    for title, rows in (extra_sections or {}).items():
        parts += [f"<h2>{html.escape(title)}</h2>", _table_html(rows)]
    parts.append("</body></html>")
    path = out / "report.html"
    buffer = io.StringIO("".join(parts))
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def rpu_levels_table(summary: dict) -> list[dict]:
    """One row per labelled level of an rPU-VAE run: leaf run, level, size, fixed true factors, active latents."""
    rows = []
    for level in summary.get("levels", []):
        rows.append(
            {
                "leaf run": "all" if level.get("leaf") is None else level["leaf"],
                "level": level["level"],
                "images": level["size"],
                "true factors held fixed": ", ".join(level.get("fixed", [])) or "-",
                "active latents": ", ".join(map(str, level.get("active", {}).get("latents", []))) or "-",
                "PBT stop": level.get("stop", ""),
            }
        )
    return rows
