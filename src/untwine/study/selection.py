"""Unsupervised model selection on a study (`untwine select udr|dynamics S`): the study's finished models grouped
by seed group (models equal but for the seed, `ResultStore.seed_groups`), each group scored with the run-level
functions (`selection.udr.udr_for_runs`, `selection.dynamics.dynamics_for_runs`), and the scores stored both in
each run's results.json and in the study's store, so they are `udr.<correlation>.*` / `dynamics.*` columns of
`ResultStore.frame()` for the analyses (`study.analysis.selection_correlations`, `selection_quality`,
`selection_by_seeds`: UDR's pair scores and the dynamics score of subsets of the seeds are stored with the scores).

Idempotent: a group whose models all hold the score (and the seeds-grow data: `subset_key`), computed over as many
models as the group has now, is kept as it is (rerun with `force` to score it again, e.g. with other options); a
group that gained seeds is scored again.
A group with fewer than two finished models is skipped and named. A group that cannot be scored (a model without
informative latents, traces missing) is reported with its one-line reason and the others go on; the error is raised
at the end (every line), with the scored groups already stored. The study's driver lock is held throughout, so a
selection and a `study run` never write the store at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from untwine.errors import InvalidInputError, UntwineError
from untwine.study.studydir import StudyDir

KINDS = ("udr", "dynamics")


class SelectionFailedError(UntwineError):
    """Some groups of a study could not be scored; the others' scores were stored. `lines`: one per group."""

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


@dataclass
class GroupScore:
    """What happened to one seed group: status "scored", "kept" (already scored), "skipped" or "failed"."""

    group: str  # the store's seed group id
    label: str  # what distinguishes it from the other groups (e.g. "beta=4.0, dataset=dsprites")
    model_ids: list[str]
    status: str
    reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)  # model_id -> its score (UDR: the model's; dynamics: spec)
    elapsed_s: float = 0.0


def score_keys(kind: str, correlation: str = "lasso") -> tuple[str, str, str]:
    """(result prefix, score key, key holding the number of models it was computed over) of a selection kind."""
    if kind == "udr":
        prefix = f"udr.{correlation}."
        return prefix, prefix + "model_score", prefix + "num_models"
    if kind == "dynamics":
        return "dynamics.", "dynamics.score", "dynamics.num_realisations"
    raise InvalidInputError(f"unknown selection {kind!r}; choose {' or '.join(KINDS)}")


def subset_key(kind: str, correlation: str = "lasso") -> str:
    """The key of what the seeds-grow analysis (`study.analysis.selection_by_seeds`) needs from a scored group:
    UDR's pair scores, the dynamics score's subset scores. A group scored before they existed is scored again."""
    return f"udr.{correlation}.pair_scores" if kind == "udr" else "dynamics.subsets"


def _labels(models: dict[str, dict], groups: dict[str, list[str]]) -> dict[str, str]:
    import json

    from untwine.selection.groups import NOT_SPECIFICATION, group_labels

    specs = {}
    for group, ids in groups.items():
        config = json.loads(models[ids[0]]["config"])
        specs[group] = {k: v for k, v in config.items() if k not in NOT_SPECIFICATION}
    return group_labels(specs)


def select_study(
    study_dir: str | Path,
    kind: str,
    force: bool = False,
    on_group: Callable[[GroupScore], None] | None = None,
    **options,
) -> list[GroupScore]:
    """Score every seed group of the study in `study_dir` with `kind` ("udr" or "dynamics") and store the scores.
    `options`: those of `udr_for_runs` (correlation, num_points, batch_size, eval_seed, filter_low_kl,
    kl_threshold, no_informative, device) or of `dynamics_for_runs` (max_subsets, subset_sizes) and
    `dynamics_score` (t, n_components, seed, ...). `on_group` is
    called with each group's outcome as it is known. Returns every group's outcome."""
    from untwine.runs import RunDir
    from untwine.selection.dynamics import dynamics_for_runs
    from untwine.selection.udr import udr_for_runs
    from untwine.training.trace import has_trace

    prefix, score_key, count_key = score_keys(kind, options.get("correlation", "lasso"))
    correlation = options.get("correlation", "lasso")
    required = [score_key] if options.get("max_subsets") == 0 else [score_key, subset_key(kind, correlation)]
    study = StudyDir(study_dir)
    study.store().close()  # a clear error if there is no study here, before taking its lock
    study.lock()
    try:
        with study.store() as store:
            models = {m["model_id"]: m for m in store.models("done")}
            groups = store.seed_groups("done")
            if not groups:
                raise InvalidInputError(f"{study.path}: the study has no finished model to score")
            runs = {i: RunDir(study.path / m["run_dir"]) for i, m in models.items()}
            if kind == "dynamics" and not any(has_trace(run.path) for run in runs.values()):
                raise InvalidInputError(
                    f"{study.path}: no model of the study was trained with a trace; the training-dynamics score "
                    "needs trace_every > 0 in the study's [train] (or --set trace_every=N)"
                )
            labels = _labels(models, groups)
            outcomes, failures = [], []
            for group, ids in groups.items():
                outcome = GroupScore(group, labels[group], ids, "scored")
                results = {i: store.results(i) for i in ids}
                if len(ids) < 2:
                    outcome.status = "skipped"
                    outcome.reason = f"{len(ids)} finished model ({ids[0]}); a group needs at least 2 seeds"
                elif not force and all(
                    all(results[i].get(k) is not None for k in required) and results[i].get(count_key) == len(ids)
                    for i in ids
                ):
                    outcome.status = "kept"
                    outcome.scores = {i: float(results[i][score_key]) for i in ids}
                else:
                    _score(outcome, [runs[i] for i in ids], kind, prefix, score_key, store, options,
                           udr_for_runs if kind == "udr" else dynamics_for_runs)  # fmt: skip
                    if outcome.status == "failed":
                        failures.append(f"group {outcome.label}: {outcome.reason}")
                outcomes.append(outcome)
                if on_group is not None:
                    on_group(outcome)
    finally:
        study.unlock()
    if failures:
        raise SelectionFailedError(failures)
    return outcomes


def _score(outcome: GroupScore, runs: list, kind: str, prefix: str, score_key: str, store, options, score) -> None:
    """Score one group with `score` (udr_for_runs / dynamics_for_runs, which write results.json) and copy the
    group's keys into the store, one transaction per model."""
    start = time.perf_counter()
    try:
        result = score(runs, group=outcome.label, **options)
    except UntwineError as exc:
        outcome.status = "failed"
        outcome.reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return
    outcome.elapsed_s = time.perf_counter() - start
    # the score's own cost (without the dynamics score's seed subsets), shared by the group's models
    per_model = {f"{prefix}elapsed_s": result.get("elapsed_s", outcome.elapsed_s) / len(runs)}
    for model_id, run in zip(outcome.model_ids, runs):
        results = run.update_results(per_model)
        store.add_results(model_id, {k: v for k, v in results.items() if k.startswith(prefix)})
        outcome.scores[model_id] = float(results[score_key])
