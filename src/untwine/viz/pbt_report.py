"""The reports of a PBT run (P/report.html, P/report.png) and of an rPU-VAE run (R/report.html), self-contained
pages in the run report's style (viz/report.py: its CSS, its score tables and its traversal figure).

A PBT report: the population's fitness per generation, the hyperparameter schedules (lr, batch size, beta) of every
member and the lineage (who copied whom), as one figure; the per-generation table with the wall and CPU time of
each generation; the exported model (which member and round, the selection score and the export's re-score); and
the final model as the run report shows a run: its headline scores, the mutual-information and DCI matrices, its
latent traversals and every score of its evaluation (`selection.pbt.evaluate_final`).

An rPU-VAE report (Estermann et al. 2020, Fig. 3 and 5 in untwine's words): each level's labelled subset (its size,
the true factors it holds fixed and how many values each takes, from the true labels of its grid points), the
traversals of the model of every level (the latents it learned), every PBT run's generations and times, and the
final model's section as above.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from untwine.training.checkpoint import atomic_write_text

MISSING = "\u2014"


def _number(value, digits: int | None = 4) -> float:
    """A float (rounded to `digits` unless None); NaN for a missing or non-finite value."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float("nan")
    if not np.isfinite(value):
        return float("nan")
    return round(value, digits) if digits is not None else value


def generation_table(records) -> list[dict]:
    """One row per generation: best member and fitness, median fitness, population size, exploits, stop, and the
    generation's wall time and CPU time (members' processes + driver; of it the members' training and scoring)."""
    rows = []
    fitness = records[records.key == "fitness"]
    exploits = records[records.key == "exploit"]
    for _, g in records[records.key == "generation"].iterrows():
        step = int(g.step)
        scores = fitness[fitness.step == step].value.astype(float)
        moves = [f"{row.model_id}<-m{row.value['source']}" for _, row in exploits[exploits.step == step].iterrows()]
        value = g.value
        rows.append(
            {
                "generation": step,
                "members": int(len(scores)),
                "best": f"m{value['best']}",
                "best_fitness": _number(value["best_score"]),
                "median_fitness": _number(np.median(scores)) if len(scores) else float("nan"),
                "exploits": ", ".join(moves),
                "stop": value.get("stop") or "",
                "wall_s": _number(value.get("generation_wall_s"), None),
                "cpu_s": _number(value.get("cpu_s"), None),
                "train_cpu_s": _number(value.get("train_cpu_s"), None),
                "score_cpu_s": _number(value.get("score_cpu_s"), None),
            }
        )
    return rows


GENERATION_HEADINGS = {
    "generation": "gen",
    "members": "members",
    "best": "best",
    "best_fitness": "best fitness",
    "median_fitness": "median",
    "exploits": "exploits (copy<-source)",
    "stop": "stop",
    "wall_s": "wall s",
    "cpu_s": "CPU s",
    "train_cpu_s": "train CPU s",
    "score_cpu_s": "score CPU s",
}


def timing_summary(rows: list[dict]) -> dict:
    """Totals and medians of the generations' wall and CPU seconds (NaN where a run stored none)."""

    def values(key):
        return [r[key] for r in rows if np.isfinite(r[key])]

    wall, cpu = values("wall_s"), values("cpu_s")
    return {
        "generations": len(rows),
        "wall_s": float(np.sum(wall)) if wall else float("nan"),
        "cpu_s": float(np.sum(cpu)) if cpu else float("nan"),
        "median_wall_s": float(np.median(wall)) if wall else float("nan"),
        "median_cpu_s": float(np.median(cpu)) if cpu else float("nan"),
    }


def _wide(records, key: str):
    part = records[records.key == key]
    return part.pivot_table(index="step", columns="model_id", values="value", aggfunc="last").astype(float)


def plot_pbt(records, path: str | Path, title: str = "PBT") -> Path:
    """Five panels: fitness (every member, best line), lr, batch size and beta per member, and the lineage."""
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
    for ax, key in zip(axes[1:4], ("lr", "batch_size", "beta")):
        wide = _wide(records, key)
        for member in wide.columns:
            ax.plot(wide.index, wide[member], ".-", alpha=0.6, lw=0.8)
        ax.set(title=key, xlabel="generation", yscale="log")
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


# --- HTML ---------------------------------------------------------------------------------------------------------


def _cell(value) -> str:
    if isinstance(value, float):
        return MISSING if not np.isfinite(value) else f"{value:.4g}"
    return html.escape(str(value))


def table_html(rows: list[dict], headings: dict | None = None, css: str = "metrics") -> str:
    """A list of dicts as a table (columns: the first row's keys, headed by `headings` where given)."""
    if not rows:
        return '<p class="note">No rows.</p>'
    head = "".join(f"<th>{html.escape(str((headings or {}).get(k, k)))}</th>" for k in rows[0])
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_cell(v)}</td>' if isinstance(v, (int, float)) else f"<td>{_cell(v)}</td>"
            for v in row.values()
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _png(path: Path, alt: str, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _page(heading: str, subtitle: str, meta: str, sections: list[tuple[str, str, str]]) -> str:
    """A self-contained page titled "<heading> — <subtitle>" in the run report's style."""
    from untwine.viz.report import CSS

    title = f"{heading} \u2014 {subtitle}"
    nav = " ".join(f'<a href="#{anchor}">{html.escape(name)}</a>' for anchor, name, _ in sections)
    body = "".join(
        f'<section id="{anchor}"><h2>{html.escape(name)}</h2>{content}</section>' for anchor, name, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)}</title><link rel="icon" href="data:,"><style>{CSS}</style></head>\n'
        f"<body><main><header><h1>{html.escape(heading)}</h1>"
        f'<p class="run">{html.escape(subtitle)}</p><p class="meta">{meta}</p></header><nav>{nav}</nav>\n{body}\n'
        "</main></body></html>\n"
    )


def _traversals(run, heading: str, caption_prefix: str = "") -> str:
    """The run report's traversal figure of a run directory (drawn by `viz.report.write_figures` if missing)."""
    from untwine.viz.report import FIGURES, _figure, figure_paths, write_figures

    figures = figure_paths(run)
    if not figures["traversals"].exists():
        figures = write_figures(run)
    return _figure(figures["traversals"], heading, caption_prefix + FIGURES["traversals"][2], True)


def _figures_of(run) -> dict:
    """The run's figures, drawn when missing or when they predate its latest evaluation (figures/latents.json)."""
    from untwine.viz.latents import captured_factors, stored_mutual_info
    from untwine.viz.report import figure_paths, latents_path, write_figures

    figures = figure_paths(run)
    try:
        drawn = json.loads(latents_path(run).read_text())
    except (OSError, json.JSONDecodeError):
        drawn = None
    stored = stored_mutual_info(run)
    captures = captured_factors(stored[0], stored[1]) if stored is not None else None
    if drawn is None or not figures["traversals"].exists() or drawn.get("captures") != captures:
        write_figures(run)
        drawn = json.loads(latents_path(run).read_text())
    return drawn


EXPORT_LABELS = {
    "member": "member",
    "round": "round (generation) of its best score",
    "model": "model of the member exported (UDR: argmax u_i of the re-score)",
    "fitness": "fitness when selected",
    "export_fitness": "fitness re-scored at export",
    "export_model_scores": "re-score's per-model UDR u_i",
    "export_leaf_run_migs": "re-score's MIG per leaf run",
    "export_error": "re-score error",
    "export_wall_s": "re-score wall s",
    "export_cpu_s": "re-score CPU s",
}


def final_model_sections(final: str | Path, what: str = "Final model") -> list[tuple[str, str, str]]:
    """The exported model's sections (a run directory, e.g. P/final): how it was exported, its headline scores,
    matrices, traversals, every score and the evaluation times (the run report's own sections)."""
    from untwine.runs import RunDir
    from untwine.viz.report import headline_section, matrix_section, metric_details, metric_timing, stored_matrices

    run = RunDir(final)
    if not (run.path / "config.toml").exists():
        note = '<p class="note">No exported model yet: the run has not finished (rerun it to continue).</p>'
        return [("final", what, note)]
    results = run.read_results()
    latents = _figures_of(run)
    export = {EXPORT_LABELS.get(k[4:], k[4:]): v for k, v in results.items() if k.startswith("pbt.")}
    config = run.read_config()
    hyper = {k: config[k] for k in ("beta", "batch_size", "learning_rate", "architecture", "latent_dim", "steps")}
    export_html = table_html([{"key": k, "value": v} for k, v in {**export, **hyper}.items()], css="kv")
    return [
        ("export", f"{what}: exported", export_html),
        ("headline", f"{what}: headline scores", headline_section(results)),
        (
            "latents",
            f"{what}: which latent captures which factor",
            matrix_section(results, stored_matrices(run), latents.get("inactive")),
        ),
        ("traversals", f"{what}: latent traversals", _traversals(run, "Latent traversals")),
        ("details", f"{what}: all scores", metric_details(results)),
        ("eval-timing", f"{what}: evaluation time", metric_timing(results)),
    ]


def pbt_sections(out: Path, records) -> list[tuple[str, str, str]]:
    """The population's figure and the per-generation table with its time summary."""
    png = plot_pbt(records, out / "report.png", title=out.name)
    rows = generation_table(records)
    times = timing_summary(rows)
    summary = (
        f'<p class="meta">{times["generations"]} generations: {times["wall_s"]:.0f} s wall and {times["cpu_s"]:.0f} '
        f"CPU-s in all; per generation (median) {times['median_wall_s']:.1f} s wall, {times['median_cpu_s']:.1f} "
        "CPU-s. Wall: from the previous generation's barrier to this one's (the first of a (re)started run from "
        "Tune's start). CPU: the members' processes from the end of their previous interval (restoring a copy, "
        "training, scoring) plus the driver's.</p>"
    )
    caption = (
        "Left to right: every member's fitness per generation (black: the best); lr, batch size and beta of every "
        "member; the lineage, an arrow from the member copied to the member that copied it (the bottom members "
        "take the top members' weights, optimiser state and hyperparameters, then perturb the hyperparameters)."
    )
    return [
        ("population", "Population", _png(png, "fitness, hyperparameters and lineage", caption)),
        ("generations", "Generations", table_html(rows, GENERATION_HEADINGS) + summary),
    ]


def _settings_meta(out: Path) -> str:
    try:
        settings = json.loads((out / "pbt.json").read_text())
    except (OSError, json.JSONDecodeError):
        return ""
    keys = ("fitness", "population", "generations", "interval_samples", "dataset", "architecture", "seed")
    return " \u00b7 ".join(f"{k} {html.escape(str(settings.get(k)))}" for k in keys if k in settings)


def write_pbt_report(out: str | Path, extra_sections: dict[str, list[dict]] | None = None) -> Path:
    """P/report.png and P/report.html (see the module docstring); `extra_sections`: title -> rows, shown as tables
    after the generations."""
    from untwine.selection.pbt import load_records

    out = Path(out)
    records = load_records(out)
    sections = pbt_sections(out, records)
    for i, (title, rows) in enumerate((extra_sections or {}).items()):
        sections.append((f"extra-{i}", title, table_html(rows)))
    sections += final_model_sections(out / "final")
    text = _page("untwine PBT report", out.name, _settings_meta(out), sections)
    path = out / "report.html"
    atomic_write_text(path, text)
    return path


# --- rPU-VAE ------------------------------------------------------------------------------------------------------


def rpu_levels_table(summary: dict) -> list[dict]:
    """One row per labelled level of an rPU-VAE run: leaf run, level, size, the true factors the subset holds fixed
    and the number of values each factor takes there (from the true labels of its grid points), active latents."""
    rows = []
    for level in summary.get("levels", []):
        values = level.get("values", {})
        rows.append(
            {
                "leaf run": "all" if level.get("leaf") is None else level["leaf"],
                "level": level["level"],
                "images": level["size"],
                "true factors held fixed": ", ".join(level.get("fixed", [])) or "-",
                "values per true factor": ", ".join(f"{k} {v}" for k, v in values.items()) or "-",
                "active latents": ", ".join(map(str, level.get("active", {}).get("latents", []))) or "-",
                "PBT stop": level.get("stop", ""),
            }
        )
    return rows


def level_run(out: Path, level: dict) -> Path:
    """The PBT run whose exported model labelled `level` (an entry of rpu.json's "levels")."""
    if level.get("leaf") is None:
        return out / "x"
    return out / f"leaf-{level['leaf']}" / f"level-{level['level']}" / "pbt"


def pbt_runs(out: Path) -> list[tuple[str, Path]]:
    """(name, directory) of every PBT run of an rPU-VAE run, in order: x-run, leaf levels, final."""
    runs = [("x-run", out / "x")]
    for leaf in sorted(out.glob("leaf-*"), key=lambda p: int(p.name.split("-")[1])):
        for level in sorted(leaf.glob("level-*"), key=lambda p: int(p.name.split("-")[1])):
            runs.append((f"{leaf.name}/{level.name}", level / "pbt"))
    runs.append(("final", out / "final"))
    return [(name, path) for name, path in runs if (path / "study.sqlite").exists()]


def rpu_run_rows(out: Path) -> tuple[list[dict], list[dict]]:
    """(one row per PBT run of the rPU-VAE run: generations, stop, best fitness, wall and CPU time; one row per
    generation of every run)."""
    from untwine.selection.pbt import load_records

    runs, generations = [], []
    for name, path in pbt_runs(out):
        rows = generation_table(load_records(path))
        times = timing_summary(rows)
        runs.append(
            {
                "PBT run": name,
                "generations": len(rows),
                "stop": rows[-1]["stop"] if rows else "",
                "best fitness": max((r["best_fitness"] for r in rows), default=float("nan")),
                "wall s": times["wall_s"],
                "CPU s": times["cpu_s"],
                "wall s / generation": times["median_wall_s"],
                "CPU s / generation": times["median_cpu_s"],
            }
        )
        generations += [{"PBT run": name, **{GENERATION_HEADINGS[k]: v for k, v in r.items()}} for r in rows]
    return runs, generations


def write_rpu_report(out: str | Path) -> Path:
    """R/report.html of an rPU-VAE run (module docstring), from R/rpu.json, its PBT runs and their exported
    models."""
    from untwine.errors import InvalidInputError
    from untwine.runs import RunDir

    out = Path(out)
    try:
        summary = json.loads((out / "rpu.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise InvalidInputError(f"{out} holds no finished rPU-VAE run (no readable rpu.json)") from None
    levels = rpu_levels_table(summary)
    caption = (
        '<p class="meta">Level 0 is the whole data set, labelled by the x-run\'s model; level L of leaf run b is '
        "the subset the reduction kept (the images in one cluster of every active latent of the model above it), "
        "labelled by the model PBT-UDR trained on it. The true factors are read from the true labels of the "
        "subset's grid points: a factor is held fixed when it takes a single value there.</p>"
    )
    pictures = []
    for level in summary.get("levels", []):
        run = RunDir(level_run(out, level) / "final")
        if not (run.path / "config.toml").exists():
            continue
        name = "x-model (level 0)" if level.get("leaf") is None else f"leaf run {level['leaf']}, level {level['level']}"
        active = ", ".join(f"z{a}" for a in level.get("active", {}).get("latents", [])) or "none"
        prefix = f"{name}: the model that labelled this level (active latents, KL > 1 by the rPU code's estimate: "
        pictures.append(f"<h3>{html.escape(name)}</h3>" + _traversals(run, name, f"{prefix}{active}). "))
    runs, generations = rpu_run_rows(out)
    per_generation = (
        "<details><summary>every generation of every PBT run</summary>" + table_html(generations) + "</details>"
    )
    sections = [
        ("levels", "Labelled subsets per level", table_html(levels) + caption),
        ("level-models", "What each level's model learned", "".join(pictures) or '<p class="note">No level model.</p>'),
        ("pbt-runs", "PBT runs: generations, wall and CPU time", table_html(runs) + per_generation),
    ]
    if (out / "final" / "study.sqlite").exists():
        from untwine.selection.pbt import load_records

        png = plot_pbt(load_records(out / "final"), out / "final" / "report.png", title="final PBT-S-VAE")
        sections.append(("final-population", "Final PBT-S-VAE (surrogate-label MIG)", _png(png, "final PBT", "")))
    sections += final_model_sections(out / "final" / "final")
    wall = summary.get("wall_s")
    meta = f"stop: {html.escape(str(summary.get('stop')))}" + (f" \u00b7 {wall:.0f} s" if wall else "")
    text = _page("untwine rPU-VAE report", out.name, meta, sections)
    path = out / "report.html"
    atomic_write_text(path, text)
    return path
