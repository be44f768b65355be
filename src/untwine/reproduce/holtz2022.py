"""Holtz, Mishne & Cloninger (2022), "Evaluating disentanglement in generative models without knowledge of latent
factors" (papers/holtz2022-training-dynamics-selection.md), reproduced through the study layer:

1. a study grid (`holtz2022.toml`, written beside the study): beta-VAEs on dSprites, the conv architecture of
   Higgins et al., beta x latent size, several seeds per specification, traced during training (`trace_every`),
   scored with the BetaVAE, FactorVAE and MIG metrics, clean and under the label-noise regimes 1-3 of Table 2;
2. `study.runner.run_study` trains and evaluates it (resumable: rerun the same command to continue);
3. `study.selection.select_study` scores every specification with the training-dynamics score and every model
   with UDR (lasso and Spearman);
4. `viz.study_report.write_study_report` writes the study's report, and `comparison_report` the comparison with
   the paper (`report.md`): Table 1 (Spearman of the dynamics ranking with each metric), Fig. 4a (the score by
   beta and latent size), Table 3 (Pearson of noisy-label with clean scores), beside the paper's numbers.

Scales (`SCALES`):
- `paper`: the paper's grid, beta in {1, 2, 4, 8, 16} x latent size in {2, 4, 8, 16, 32} x 25 seeds = 625 models
  (Table 1's largest seed count), 300,000 steps at the reference's Adam 1e-4 (disentanglement_lib's beta-VAE; the
  paper gives no step count), traced once per dSprites epoch (11,520 steps at batch 64: 27 trace steps x 100
  samples), the metrics at the reference's sample sizes. For a GPU or a cluster (`--gpus-per-trial`, `--address`).
- `cpu`: a documented subset for a 2-core CPU, about 45 minutes (the arithmetic is in README "Reproductions"):
  beta in {1, 4, 16} x latent size in {2, 4, 16} x 3 seeds = 27 models, 800 steps at Adam 5e-4, traced every 80
  steps (11 x 100 = 1,100 nodes per run), MIG on 500 points, BetaVAE / FactorVAE scores on 100 / 50 and 150 / 75
  points (64 image pairs per point), each clean and under the three noise regimes.
- `tiny` (for the tests): 3 specifications x 2 seeds of the fully-connected network, 20 steps, tiny metric sizes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from untwine.errors import InvalidInputError

PAPER = "Holtz, Mishne & Cloninger (2022), arXiv 2210.01760"
METRICS = ("beta_vae", "factor_vae", "mig")
LABELS = {"beta_vae": "BetaVAE", "factor_vae": "FactorVAE", "mig": "MIG"}


@dataclass(frozen=True)
class Scale:
    betas: tuple[float, ...]
    latent_dims: tuple[int, ...]
    seeds: int
    steps: int
    trace_every: int
    trace_samples: int = 100
    learning_rate: float = 1e-4
    architecture: str = "conv"
    batch_size: int = 64
    checkpoint_every: int = 1000
    num_points: int | None = None  # None: the metrics' reference sample sizes
    options: dict = field(default_factory=dict)
    label_noise: tuple[int, ...] = (1, 2, 3)
    description: str = ""

    @property
    def num_models(self) -> int:
        return len(self.betas) * len(self.latent_dims) * self.seeds


SCALES = {
    "paper": Scale(
        betas=(1.0, 2.0, 4.0, 8.0, 16.0),
        latent_dims=(2, 4, 8, 16, 32),
        seeds=25,
        steps=300_000,
        trace_every=11_520,
        checkpoint_every=10_000,
        description="the paper's grid: beta {1, 2, 4, 8, 16} x latent size {2, 4, 8, 16, 32} x 25 seeds, 300,000 "
        "steps, traced every dSprites epoch; metrics at the reference's sample sizes",
    ),
    "cpu": Scale(
        betas=(1.0, 4.0, 16.0),
        latent_dims=(2, 4, 16),
        seeds=3,
        steps=800,
        trace_every=80,
        learning_rate=5e-4,
        checkpoint_every=200,
        num_points=500,
        options={"beta_vae": {"num_train": 100, "num_eval": 50}, "factor_vae": {"num_train": 150, "num_eval": 75}},
        description="a 2-core CPU subset: beta {1, 4, 16} x latent size {2, 4, 16} x 3 seeds, 800 steps at Adam "
        "5e-4, traced every 80 steps; MIG on 500 points, BetaVAE / FactorVAE scores on 100 / 150 points",
    ),
    "tiny": Scale(
        betas=(1.0, 4.0, 16.0),
        latent_dims=(4,),
        seeds=2,
        steps=20,
        trace_every=5,
        trace_samples=12,
        architecture="fc",
        batch_size=8,
        checkpoint_every=10,
        num_points=200,
        options={
            "beta_vae": {"num_train": 20, "num_eval": 10},
            "factor_vae": {"num_train": 20, "num_eval": 10, "num_variance_estimate": 200},
        },
        description="a test-sized run: 3 specifications x 2 seeds of the fc network, 20 steps",
    ),
}


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise InvalidInputError(f"unknown scale {name!r}; choose cpu or paper")
    return SCALES[name]


def _toml_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def study_toml(scale: Scale, name: str = "holtz2022") -> str:
    """The study grid of a scale, as the TOML `untwine study run --config` reads."""
    lines = [
        f"# {PAPER}: {scale.description}",
        "[study]",
        f"name = {_toml_value(name)}",
        f"metrics = {_toml_value(list(METRICS))}",
        'representations = ["mean"]',
        f"label_noise = {_toml_value(list(scale.label_noise))}",
    ]
    if scale.num_points is not None:
        lines.append(f"num_points = {scale.num_points}")
    for metric, settings in scale.options.items():
        lines.append(f"options.{metric} = {{ {', '.join(f'{k} = {_toml_value(v)}' for k, v in settings.items())} }}")
    train = {
        "dataset": "dsprites",
        "method": "beta_vae",
        "beta": list(scale.betas),
        "latent_dim": list(scale.latent_dims),
        "seed": list(range(scale.seeds)),
        "steps": scale.steps,
        "learning_rate": scale.learning_rate,
        "architecture": scale.architecture,
        "batch_size": scale.batch_size,
        "checkpoint_every": scale.checkpoint_every,
        "log_every": max(1, min(100, scale.steps // 10)),
        "trace_every": scale.trace_every,
        "trace_samples": scale.trace_samples,
    }
    lines += ["", "[train]"] + [f"{k} = {_toml_value(v)}" for k, v in train.items()]
    return "\n".join(lines) + "\n"


def reproduce(out: str | Path, scale: str = "cpu", options=None, events=None, device: str = "cpu", log=print) -> Path:
    """Run the reproduction at `scale` into `out` (DIR/holtz2022.toml, DIR/study/, DIR/report.md) and return the
    comparison report's path. `options`: the study runner's RunOptions; rerunning continues where it stopped."""
    from untwine.study.definition import toml_study
    from untwine.study.runner import RunOptions, run_study
    from untwine.study.selection import SelectionFailedError, select_study
    from untwine.study.studydir import StudyDir
    from untwine.viz.study_report import write_study_report

    chosen = get_scale(scale)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    grid, text = out / "holtz2022.toml", study_toml(chosen)
    if grid.exists() and grid.read_text() != text and (out / "study" / "study.sqlite").exists():
        raise InvalidInputError(f"{out} holds this reproduction at another scale ({grid}); use another --out")
    grid.write_text(text)
    definition = toml_study(grid)
    study = out / "study"
    log(f"{PAPER}, scale {scale}: {len(definition.models)} models -> {study}")
    started = time.perf_counter()
    run_study(definition, study, options or RunOptions(), events)
    problems = []
    for kind, settings in (
        ("dynamics", {}),
        ("udr", {"correlation": "lasso", "device": device}),
        ("udr", {"correlation": "spearman", "device": device}),
    ):
        name = kind + (f" ({settings['correlation']})" if "correlation" in settings else "")
        log(f"scoring every specification: {name}")
        try:
            select_study(study, kind, **settings)
        except SelectionFailedError as exc:  # the other groups' scores are stored; the report names the failures
            problems += [f"{name}: {line}" for line in exc.lines]
    html = write_study_report(study)
    with StudyDir(study).store() as store:
        frame = store.frame()
    text = comparison_report(frame, scale, time.perf_counter() - started, problems, html.relative_to(out))
    path = out / "report.md"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------------------
# The comparison with the paper


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _with_settings(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with beta and latent_dim columns read from each model's config."""
    configs = frame["config"].map(json.loads)
    return frame.assign(beta=configs.map(lambda c: c.get("beta")), latent_dim=configs.map(lambda c: c["latent_dim"]))


def comparison_report(frame: pd.DataFrame, scale: str, wall_s: float, problems=(), study_report=None) -> str:
    """The reproduction's findings beside the paper's, as Markdown: Table 1, Fig. 4a, Table 3, selection quality,
    and what each score cost per model. Missing scores give a line saying so, never an error."""
    from untwine.study.analysis import (
        PAPER_DYNAMICS,
        PAPER_LABEL_NOISE,
        finished,
        label_noise_robustness,
        selection_correlations,
        selection_quality,
    )

    chosen = get_scale(scale)
    data = finished(frame)
    counts = frame["status"].value_counts().to_dict() if "status" in frame.columns else {}
    parts = [
        f"# Reproduction of {PAPER}",
        "",
        f"Scale `{scale}`: {chosen.description}. {len(frame)} models ({counts.get('done', 0)} done, "
        f"{counts.get('failed', 0)} failed); this run took {wall_s / 60:.1f} min"
        + (f"; the study's own report: `{study_report}`." if study_report else "."),
        "",
    ]
    correlations = selection_correlations(frame)
    table = correlations.tables.get("selection_correlations")
    parts += ["## Table 1: Spearman rank correlation of the unsupervised ranking with each metric", ""]
    if table is None or table.empty:
        parts += [correlations.note or "No correlation could be computed.", ""]
    else:
        spec = table[table["level"] == "specification"]
        seeds = int(spec["seeds"].median()) if len(spec) else 0
        header = ["metric", f"training dynamics (here, {seeds} seeds)", "UDR lasso (here)", "UDR Spearman (here)"]
        header += [f"paper, n = {n}" for n in (5, 10, 25)]
        rows = []
        for metric, paper in PAPER_DYNAMICS.items():
            cells = [metric]
            for label in ("training dynamics", "UDR (lasso)", "UDR (spearman)"):
                match = spec[(spec["unsupervised"] == label) & (spec["metric"] == metric)]
                cells.append(_fmt(match["spearman"].mean()) if len(match) else "-")
            cells += [f"{paper[n][0]:.2f} ± {paper[n][1]:.2f}" for n in (5, 10, 25)]
            rows.append(cells)
        specs = int(spec["n"].max()) if len(spec) else 0
        parts += [
            _table(header, rows),
            "",
            f"Across the {specs} specifications (seed groups) of dSprites, each ranked by its unsupervised score "
            "(the training-dynamics score: lower = better) and by the mean of its models' metric, as the paper "
            "does; the paper does not say what its ± is (presumably the spread over draws of the seeds). "
            + _agreement(spec),
            "",
        ]
    parts += _figure_4a(data)
    quality = selection_quality(frame).tables.get("selection_quality")
    parts += ["## Selecting by the unsupervised score", ""]
    if quality is None or quality.empty:
        parts += ["No unsupervised score to select by.", ""]
    else:
        picked = quality[(quality["level"] == "specification") & quality["unsupervised"].isin(
            ["training dynamics", "UDR (lasso)"])]  # fmt: skip
        rows = [
            [
                r.unsupervised,
                r.metric,
                _fmt(r.chosen, 3),
                _fmt(r.best, 3),
                _fmt(r.random, 3),
                _fmt(r.rank, 1),
                _fmt(r.p_at_least_random),
            ]  # fmt: skip
            for r in picked.itertuples()
        ]
        parts += [
            _table(["score", "metric", "chosen", "best", "random", "rank", "P(chosen >= random)"], rows),
            "",
            "The specification each unsupervised score ranks first, judged by the mean metric of its models.",
            "",
        ]
    noise = label_noise_robustness(frame).tables.get("label_noise")
    parts += ["## Table 3: Pearson correlation of noisy-label with clean scores", ""]
    if noise is None or noise.empty:
        parts += ["No noisy-label scores in this study.", ""]
    else:
        rows = [["training dynamics, UDR (no labels)", "1.00", "1.00", "1.00", "1.0 / 1.0 / 1.0"]]
        for metric, paper in PAPER_LABEL_NOISE.items():
            cells = [metric]
            for regime in (1, 2, 3):
                match = noise[(noise["metric"] == metric) & (noise["regime"] == regime)]
                cells.append(_fmt(match["pearson"].mean()) if len(match) else "-")
            cells.append(" / ".join(f"{p:.2f}" for p in paper))
            rows.append(cells)
        parts += [
            _table(["score", "regime 1 (here)", "regime 2 (here)", "regime 3 (here)", "paper (1 / 2 / 3)"], rows),
            "",
            f"Over the {int(noise['n'].max())} models; the paper finds every supervised metric degrading as the "
            "noise grows, the unsupervised score unaffected.",
            "",
        ]
    parts += _costs(data)
    if problems:
        parts += ["## Scores that could not be computed", ""] + [f"- {line}" for line in problems] + [""]
    return "\n".join(parts)


def _agreement(spec: pd.DataFrame) -> str:
    dynamics = spec[spec["unsupervised"] == "training dynamics"].dropna(subset=["spearman"])
    if dynamics.empty:
        return "No training-dynamics correlation here (too few specifications, or the score is missing)."
    positive = int((dynamics["spearman"] > 0).sum())
    return (
        f"Here the training-dynamics ranking correlates positively with {positive} of the {len(dynamics)} metrics "
        "(the paper: all three, 0.54-0.69)."
    )


def _figure_4a(data: pd.DataFrame) -> list[str]:
    parts = ["## Fig. 4a: the training-dynamics score by latent size and beta (lower = more stable)", ""]
    if "dynamics.score" not in data.columns or not data["dynamics.score"].notna().any():
        return parts + ["No training-dynamics score in this study (`untwine select dynamics S`).", ""]
    table = _with_settings(data).pivot_table(
        index="latent_dim", columns="beta", values="dynamics.score", aggfunc="mean"
    )
    rows = [[str(dim)] + [_fmt(v, 5) for v in table.loc[dim]] for dim in table.index]
    return parts + [
        _table(["latent size \\ beta"] + [f"{b:g}" for b in table.columns], rows),
        "",
        "The paper's Fig. 4a: the score is lowest at latent size 4 (dSprites' number of varying factors) and, for a "
        "fixed latent size, generally grows with beta.",
        "",
    ]


def _costs(data: pd.DataFrame) -> list[str]:
    def mean(column: str):
        return float(pd.to_numeric(data[column], errors="coerce").mean()) if column in data.columns else None

    evaluation = [c for c in data.columns if isinstance(c, str) and c.startswith("eval.") and c.endswith(".elapsed_s")]
    eval_s = float(data[evaluation].apply(pd.to_numeric, errors="coerce").sum(axis=1).mean()) if evaluation else None
    rows = [
        ["training (with traces)", _fmt(mean("train.elapsed_s"), 1)],
        ["evaluation (3 metrics, clean and noisy)", _fmt(eval_s, 1)],
        ["training-dynamics score", _fmt(mean("dynamics.elapsed_s"), 2)],
        ["UDR (lasso)", _fmt(mean("udr.lasso.elapsed_s"), 2)],
        ["UDR (Spearman)", _fmt(mean("udr.spearman.elapsed_s"), 2)],
    ]
    return ["## Cost per model (wall seconds, mean)", "", _table(["step", "seconds"], rows), ""]
