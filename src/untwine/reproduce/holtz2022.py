"""Holtz, Mishne & Cloninger (2022), "Evaluating disentanglement in generative models without knowledge of latent
factors" (papers/holtz2022-training-dynamics-selection.md), reproduced through the study layer:

1. a study grid (`holtz2022.toml`, written beside the study): beta-VAEs on dSprites, the conv architecture of
   Higgins et al., beta x latent size, several seeds per specification, traced during training (`trace_every`),
   scored with the BetaVAE, FactorVAE and MIG metrics, clean and under the label-noise regimes 1-3 of Table 2, and
   with the unfairness of downstream predictions (Table 4);
2. `study.runner.run_study` trains and evaluates it (resumable: rerun the same command to continue; a directory
   holding a smaller grid of the same models is extended, its models reused: `extend_study`, `adopt_runs`);
3. `study.selection.select_study` scores every specification with the training-dynamics score (also from subsets
   of its seeds) and every model with UDR (lasso and Spearman; with its pair scores);
4. `viz.study_report.write_study_report` writes the study's report, and `comparison_report` the comparison with
   the paper (`report.md`): Table 1 (Spearman of the unsupervised rankings with each metric, with all seeds and as
   the number of seeds grows), Fig. 4a (the score by beta and latent size), Table 3 (Pearson of noisy-label with
   clean scores), Table 4 (Spearman with the unfairness), beside the paper's numbers.

Scales (`SCALES`):
- `paper`: the paper's grid, beta in {1, 2, 4, 8, 16} x latent size in {2, 4, 8, 16, 32} x 25 seeds = 625 models
  (Table 1's largest seed count), 300,000 steps at the reference's Adam 1e-4 (disentanglement_lib's beta-VAE; the
  paper gives no step count), traced once per dSprites epoch (11,520 steps at batch 64: 27 trace steps x 100
  samples), the metrics at the reference's sample sizes, the dynamics score of subsets of 5, 10 and 25 seeds (the
  paper's). For a GPU or a cluster (`--gpus-per-trial`, `--address`).
- `cpu`: a documented subset for a 2-core CPU, about 2 hours (the arithmetic is in docs/design-notes.md):
  beta in {1, 2, 4, 16} x latent size in {2, 4, 8, 16} x 5 seeds = 80 models, 800 steps at Adam 5e-4, traced
  every 80 steps (11 x 100 = 1,100 nodes per run), MIG and the unfairness on 500 points, BetaVAE / FactorVAE
  scores on 100 / 50 and 150 / 75 points (64 image pairs per point), the first three clean and under the three
  noise regimes; the dynamics score of every subset of 2, 3, 4 and 5 seeds. It holds the 27 models of the earlier
  cpu scale (beta {1, 4, 16} x latent size {2, 4, 16} x 3 seeds), so an earlier cpu reproduction is extended.
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
METRICS = ("beta_vae", "factor_vae", "mig")  # Table 1's supervised metrics, also scored under label noise (Table 3)
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
    metrics: tuple[str, ...] = METRICS + ("fairness",)  # fairness: Table 4's unfairness; no label noise for it
    subset_sizes: tuple[int, ...] | None = None  # seeds per subset for the dynamics score (None: selection.seeds)
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
        subset_sizes=(5, 10, 25),
        description="the paper's grid: beta {1, 2, 4, 8, 16} x latent size {2, 4, 8, 16, 32} x 25 seeds, 300,000 "
        "steps, traced every dSprites epoch; metrics at the reference's sample sizes",
    ),
    "cpu": Scale(
        betas=(1.0, 2.0, 4.0, 16.0),
        latent_dims=(2, 4, 8, 16),
        seeds=5,
        steps=800,
        trace_every=80,
        learning_rate=5e-4,
        checkpoint_every=200,
        num_points=500,
        options={"beta_vae": {"num_train": 100, "num_eval": 50}, "factor_vae": {"num_train": 150, "num_eval": 75}},
        description="a 2-core CPU subset: beta {1, 2, 4, 16} x latent size {2, 4, 8, 16} x 5 seeds, 800 steps at "
        "Adam 5e-4, traced every 80 steps; MIG and the unfairness on 500 points, BetaVAE / FactorVAE scores on 100 / "
        "150 points",
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
            "fairness": {"num_test_points_per_class": 5},
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
        f"metrics = {_toml_value(list(scale.metrics))}",
        'representations = ["mean"]',
        f"label_noise = {_toml_value(list(scale.label_noise))}",
        f"label_noise_metrics = {_toml_value([m for m in scale.metrics if m in METRICS])}",
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
    comparison report's path. `options`: the study runner's RunOptions; rerunning continues where it stopped, and a
    directory holding a smaller grid of the same models (e.g. the cpu scale before it had 5 seeds) is extended,
    its models reused (`extend_study`)."""
    from untwine.study.runner import RunOptions, run_study
    from untwine.study.selection import SelectionFailedError, select_study
    from untwine.study.studydir import StudyDir
    from untwine.viz.study_report import write_study_report

    chosen = get_scale(scale)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{out} exists and is not a directory")
    text = study_toml(chosen)
    definition = _definition(text)
    study = out / "study"
    extend_study(study, definition, scale, log)
    out.mkdir(parents=True, exist_ok=True)
    (out / "holtz2022.toml").write_text(text)
    adopt_runs(study, definition, log)
    log(f"{PAPER}, scale {scale}: {len(definition.models)} models -> {study}")
    started = time.perf_counter()
    run_study(definition, study, options or RunOptions(), events)
    problems = []
    for kind, settings in (
        ("dynamics", {"subset_sizes": chosen.subset_sizes}),
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


def _definition(text: str):
    """The StudyDefinition of a grid's TOML text."""
    import tempfile

    from untwine.study.definition import toml_study

    with tempfile.TemporaryDirectory(prefix="holtz2022-") as folder:
        grid = Path(folder) / "holtz2022.toml"
        grid.write_text(text)
        return toml_study(grid)


SUPERSEDED = "study-superseded-"  # DIR/study-superseded-<fingerprint>/: a study extended by a larger grid


def evaluation_changes(old: dict, new: dict) -> list[str]:
    """What the evaluation `new` would do differently from `old` for what `old` already evaluated (empty: `new`
    only adds metrics or label-noise regimes, which a study's trial adds to a finished model's results)."""
    changes = []
    for rep, metrics in (old.get("per_representation") or {}).items():
        for metric in metrics:
            if metric not in (new.get("per_representation") or {}).get(rep, []):
                changes.append(f"{metric} ({rep}) is not evaluated")
            elif (old.get("options") or {}).get(metric) != (new.get("options") or {}).get(metric):
                changes.append(f"{metric} has other options")
    noise_old, noise_new = old.get("label_noise") or {}, new.get("label_noise") or {}
    for key in ("regimes", "metrics"):
        if not set(noise_old.get(key, [])) <= set(noise_new.get(key, [])):
            changes.append(f"label noise {key} are dropped")
    if old.get("eval_seed", 0) != new.get("eval_seed", 0):
        changes.append("the evaluation seed differs")
    return changes


def current_id(config_json: str) -> str | None:
    """The model id that a stored model's config has today (`study.definition.config_hash`; a study stored before
    ba6ce1e hashed the unset fields too, so its ids differ), or None if the config no longer builds."""
    from untwine.config import TrainConfig
    from untwine.errors import UntwineError
    from untwine.study.definition import config_hash

    try:
        return config_hash(TrainConfig.build(**json.loads(config_json)))
    except (UntwineError, ValueError, TypeError):
        return None


def extend_study(study: Path, definition, scale: str, log=print) -> None:
    """Make way for the study `definition` in `study` when that holds another study of this reproduction: an
    earlier grid (e.g. the cpu scale before it grew to 5 seeds and 16 specifications) or the same grid stored under
    other model ids. Allowed when every model it holds is a model of the new grid (the same identity,
    `study.definition.identity`, compared through `current_id`) evaluated alike (`evaluation_changes`). The old
    study is moved aside whole to DIR/study-superseded-<fingerprint>/ (its store kept); `adopt_runs` then moves the
    run directories of the new grid's models into the new study, where the study runner's trial neither retrains a
    finished model nor re-evaluates what its results.json holds: only the new models are trained and only the added
    metrics evaluated. Anything else is an error and nothing moves."""
    from untwine.errors import UntwineError
    from untwine.study.studydir import StudyDir

    folder = StudyDir(study)
    if not folder.exists():
        return
    refusal = f"{study.parent} holds this reproduction at another scale ({{}}); use another --out"
    try:
        with folder.store() as store:
            fingerprint, described, models = store.meta("fingerprint"), store.meta("study") or {}, store.models()
    except UntwineError as exc:
        raise InvalidInputError(refusal.format(f"its study cannot be read: {str(exc).splitlines()[0]}")) from None
    if fingerprint == definition.fingerprint():
        return
    wanted = {m.model_id for m in definition.models}
    outside = [m["model_id"] for m in models if current_id(m["config"]) not in wanted]
    if described.get("name") != definition.name or outside:
        raise InvalidInputError(
            refusal.format(f"{len(outside)} of its {len(models)} models are not in the {scale} grid")
        )
    changes = evaluation_changes(described.get("evaluation") or {}, definition.evaluation)
    if changes:
        raise InvalidInputError(refusal.format(f"its models were evaluated otherwise: {'; '.join(changes)}"))
    aside = study.parent / f"{SUPERSEDED}{fingerprint}"
    while aside.exists():  # the same old study twice (recreated): keep both
        aside = aside.with_name(aside.name + "+")
    folder.lock()  # fails at once if a driver runs the old study
    try:
        study.rename(aside)
    finally:
        folder.unlock()
    log(f"extending the study of {len(models)} models to the {scale} grid of {len(definition.models)} (its models "
        f"are reused; its store is kept in {aside})")  # fmt: skip


def adopt_runs(study: Path, definition, log=print) -> int:
    """Move the run directories of `definition`'s models out of the superseded studies beside `study`
    (`extend_study`) into `study`, each to its model's current run directory (creating the store first, under the
    study's driver lock). Idempotent, so an interrupted extension is finished by the next run. Returns how many
    were moved."""
    from untwine.study.studydir import StudyDir

    specs = {m.model_id: m for m in definition.models}
    moves = []
    for aside in sorted(study.parent.glob(f"{SUPERSEDED}*")):
        with StudyDir(aside).store() as store:
            stored = store.models()
        for model in stored:
            spec = specs.get(current_id(model["config"]))
            if spec is not None and model["run_dir"] and (aside / model["run_dir"]).is_dir():
                if not (study / spec.run_dir).exists():
                    moves.append((aside / model["run_dir"], study / spec.run_dir))
    if not moves:
        return 0
    folder = StudyDir(study)
    folder.lock()
    try:
        folder.open(definition.describe(), definition.fingerprint()).close()
        for source, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            source.rename(target)
    finally:
        folder.unlock()
    log(f"reusing {len(moves)} trained model(s) of the superseded study")
    return len(moves)


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
    """The reproduction's findings beside the paper's, as Markdown: Table 1 (with all seeds, then as the number of
    seeds grows), Fig. 4a, selection quality, Table 3, Table 4 and what each score cost per model. Missing scores
    give a line saying so, never an error."""
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
    parts += _seeds_grow(frame)
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
    parts += _table4(frame)
    parts += _costs(data)
    if problems:
        parts += ["## Scores that could not be computed", ""] + [f"- {line}" for line in problems] + [""]
    return "\n".join(parts)


SEEDS_GROW_SCORES = ("training dynamics", "UDR (lasso)", "UDR (spearman)")


def _seeds_grow(frame: pd.DataFrame) -> list[str]:
    """Table 1 as the number of seeds per specification grows (`study.analysis.selection_by_seeds`)."""
    from untwine.study.analysis import PAPER_DYNAMICS, selection_by_seeds

    parts = ["### Table 1 as the number of seeds per specification grows", ""]
    result = selection_by_seeds(frame)
    table = result.tables.get("selection_by_seeds")
    if table is None or table.empty:
        return parts + [result.note or "No correlation could be computed.", ""]
    sizes = sorted(table["seeds"].unique())
    header = ["metric", "score"] + [f"n = {n}" for n in sizes] + [f"paper, n = {n}" for n in (5, 10, 25)]
    rows = []
    for metric, paper in PAPER_DYNAMICS.items():
        for label in SEEDS_GROW_SCORES:
            part = table[(table["metric"] == metric) & (table["unsupervised"] == label)].set_index("seeds")
            if part.empty:
                continue
            cells = [metric, label] + [_seeds_cell(part.loc[n]) if n in part.index else "-" for n in sizes]
            own = label == "training dynamics"
            cells += [f"{paper[n][0]:.2f} ± {paper[n][1]:.2f}" if own else "-" for n in (5, 10, 25)]
            rows.append(cells)
    specs = int(table["specifications"].max())
    return parts + [
        _table(header, rows),
        "",
        f"Each of the {specs} specifications scored from n of its seeds only (training dynamics: the MMD score "
        "over the joint embedding of those n realisations; UDR: each of the n models scored against the other "
        "n - 1, averaged) and ranked against the mean metric of the same n models. A cell is the mean ± standard "
        "deviation over draws of n seeds (every subset of n of the seeds when there are at most 10, else 10 draws; "
        "the same seed positions in every specification), then in brackets the value with the first n seeds; the "
        "last column uses every seed (one draw). The paper does not say what its ± is taken over.",
        "",
    ]


def _seeds_cell(row: pd.Series) -> str:
    if row["draws"] < 2 or not np.isfinite(row["spearman_std"]):
        return _fmt(row["spearman_mean"])
    return f"{_fmt(row['spearman_mean'])} ± {_fmt(row['spearman_std'])} ({_fmt(row['spearman_first'])})"


def _table4(frame: pd.DataFrame) -> list[str]:
    """Table 4: each score's Spearman correlation with the unfairness (`study.analysis.selection_fairness`)."""
    from untwine.study.analysis import PAPER_CLUSTERING, PAPER_DYNAMICS, PAPER_FAIRNESS, selection_fairness

    parts = ["## Table 4: Spearman correlation with the unfairness of downstream predictions", ""]
    result = selection_fairness(frame)
    table = result.tables.get("selection_fairness")
    if table is None or table.empty:
        return parts + [result.note or "No correlation could be computed.", ""]
    spec = table[table["level"] == "specification"].set_index("score")
    rows = []
    for label in (*SEEDS_GROW_SCORES, *PAPER_DYNAMICS):
        if label not in spec.index:
            continue
        rows.append([label, _fmt(spec.loc[label, "spearman"]), _fmt(PAPER_FAIRNESS.get(label)),
                     _fmt(PAPER_CLUSTERING.get(label))])  # fmt: skip
    return parts + [
        _table(["score", "unfairness (here)", "unfairness (paper)", "clustering (paper; not reproduced)"], rows),
        "",
        f"Across the {int(spec['n'].max())} specifications (each its models' mean), the unsupervised scores "
        "oriented so that higher = better: a negative correlation means that a better score goes with fairer "
        "predictions (Locatello et al. 2019's mean unfairness of gradient-boosted classifiers, lower = fairer). The "
        "paper's clustering column (the sample efficiency of an RL agent on COBRA's clustering task with MONet "
        "encoders) is not reproduced: docs/design-notes.md says why.",
        "",
    ]


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

    def summed(columns: list) -> float | None:
        return float(data[columns].apply(pd.to_numeric, errors="coerce").sum(axis=1).mean()) if columns else None

    timed = [c for c in data.columns if isinstance(c, str) and c.startswith("eval.") and c.endswith(".elapsed_s")]
    fairness = [c for c in timed if c.split(".")[2] == "fairness"]
    rows = [
        ["training (with traces)", _fmt(mean("train.elapsed_s"), 1)],
        [
            "evaluation (BetaVAE, FactorVAE, MIG; clean and noisy)",
            _fmt(summed([c for c in timed if c not in fairness]), 1),
        ],
        ["evaluation (unfairness)", _fmt(summed(fairness), 1)],
        ["training-dynamics score", _fmt(mean("dynamics.elapsed_s"), 2)],
        ["training-dynamics score of the seed subsets (Table 1 by seeds)", _fmt(mean("dynamics.subsets_elapsed_s"), 2)],
        ["UDR (lasso)", _fmt(mean("udr.lasso.elapsed_s"), 2)],
        ["UDR (Spearman)", _fmt(mean("udr.spearman.elapsed_s"), 2)],
    ]
    return ["## Cost per model (wall seconds, mean)", "", _table(["step", "seconds"], rows), ""]
