"""The papers' analyses of a study, each a pure function of the study's frame (`ResultStore.frame()`: one row per
model, columns method, dataset, seed, value_index, value, status, and the result keys).

From Locatello et al. (2019): the total correlation of the sampled and the mean representation against the
regularisation strength (Fig. 1), the rank correlations between the disentanglement metrics per data set
(Fig. 2, Fig. 12), unsupervised scores against the metrics (Fig. 4 centre), the share of a score's variance explained
by method, hyperparameter and seed (§5.3, Table 5), the transfer of model selection (Table 1) and the rank
correlations of the metrics with downstream accuracy and sample efficiency (Fig. 5). From Hartmann (2021): score
distributions by model (Fig. 7), data set (Fig. 8), hyperparameter (Fig. 9-11) and seed. Model selection without
labels (Duan et al. 2020, Holtz et al. 2022): the unsupervised scores' rank correlation with the metrics (Holtz
Table 1), also as the number of seeds per specification grows, the quality of the model they select, the scores'
correlation with the unfairness of downstream predictions (Holtz Table 4) and the metrics' robustness to label
noise (Holtz Table 3).

Each function returns an `Analysis`: tables (written as CSV), the data its figure needs, a caption that says what
it shows and on how many models, and a note instead of a crash when the study lacks what it needs (a metric, a
second seed, a second data set).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from untwine.errors import InvalidInputError

# The disentanglement scores of Locatello et al., untwine metric and key (mean representation unless asked).
SCORES: dict[str, tuple[str, str]] = {
    "BetaVAE": ("beta_vae", "eval_accuracy"),
    "FactorVAE": ("factor_vae", "eval_accuracy"),
    "MIG": ("mig", "discrete_mig"),
    "DCI Disentanglement": ("dci", "disentanglement"),
    "Modularity": ("modularity_explicitness", "modularity_score"),
    "SAP": ("sap", "SAP_score"),
    "IRS": ("irs", "IRS"),
    "posterior MIG": ("mig_posterior", "posterior_mig"),
}
# Unsupervised scores (Locatello et al. Fig. 4 centre): from the training summary and the unsupervised metric.
UNSUPERVISED = {
    "reconstruction": "train.reconstruction_loss",
    "KL": "train.kl_loss",
    "ELBO": "train.elbo",
    "TC (Gaussian)": "eval.{rep}.unsupervised.gaussian_total_correlation",
    "Wasserstein corr.": "eval.{rep}.unsupervised.gaussian_wasserstein_correlation_norm",
    "mutual info": "eval.{rep}.unsupervised.mutual_info_score",
}
TC_KEY = "eval.{rep}.unsupervised.gaussian_total_correlation"
DOWNSTREAM = {"LR": "downstream_logistic_regression", "GBT": "downstream_boosted_trees"}
# Table 1 of Locatello et al.: P(selection transferred beats a random model) by (metric, data set) of the target.
PAPER_TRANSFER = {
    ("same", "same"): 0.807,
    ("same", "other"): 0.593,
    ("other", "same"): 0.626,
    ("other", "other"): 0.549,
}
# Unsupervised model-selection scores: column and direction (+1: higher is better, -1: lower is better).
SELECTION_SCORES: dict[str, tuple[str, int]] = {
    "UDR (lasso)": ("udr.lasso.model_score", 1),
    "UDR (spearman)": ("udr.spearman.model_score", 1),
    "training dynamics": ("dynamics.score", -1),
    "TC (Gaussian)": ("eval.{rep}.unsupervised.gaussian_total_correlation", -1),
    "Wasserstein corr.": ("eval.{rep}.unsupervised.gaussian_wasserstein_correlation_norm", -1),
}
PER_SPECIFICATION = ("training dynamics",)  # one value per seed group: no ranking of a group's models
# Holtz et al. 2022 Table 1: Spearman (mean, std) of the training-dynamics ranking with each metric, by seeds.
PAPER_DYNAMICS = {
    "BetaVAE": {5: (0.54, 0.12), 10: (0.57, 0.06), 25: (0.61, 0.02)},
    "FactorVAE": {5: (0.56, 0.21), 10: (0.60, 0.09), 25: (0.60, 0.04)},
    "MIG": {5: (0.60, 0.07), 10: (0.65, 0.03), 25: (0.69, 0.02)},
}
# Holtz et al. 2022 Table 4: Spearman correlation of each score with the unfairness of Locatello et al. (2019, "On the
# fairness of disentangled representations") and with an RL agent's sample efficiency on COBRA's clustering task.
PAPER_FAIRNESS = {"training dynamics": -0.72, "BetaVAE": -0.75, "FactorVAE": -0.80, "MIG": -0.66}
PAPER_CLUSTERING = {"training dynamics": -0.59, "BetaVAE": -0.51, "FactorVAE": -0.56, "MIG": -0.48}
UNFAIRNESS = ("fairness", "mean_fairness:mean_pred:mean_sens")  # metric and key of the paper's unfairness score
# Holtz et al. 2022 Table 3: Pearson correlation of noisy-label with clean scores, noise regimes 1, 2, 3.
PAPER_LABEL_NOISE = {"BetaVAE": (0.69, 0.54, 0.47), "FactorVAE": (0.84, 0.75, 0.63), "MIG": (0.86, 0.76, 0.67)}
# Methods whose hyperparameter loosens (not tightens) the constraint as it grows: left out of Fig. 1, as the paper.
LOOSENING = ("annealed_vae",)
METHOD_LABELS = {
    "vae": "VAE",
    "beta_vae": "beta-VAE",
    "factor_vae": "FactorVAE",
    "beta_tcvae": "beta-TCVAE",
    "dip_vae_i": "DIP-VAE-I",
    "dip_vae_ii": "DIP-VAE-II",
    "annealed_vae": "AnnealedVAE",
}


@dataclass
class Analysis:
    key: str  # file stem of its figure and tables
    title: str
    caption: str  # what it shows and how many models it rests on
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    note: str | None = None  # why (part of) it could not be computed
    n_models: int = 0
    data: dict = field(default_factory=dict)  # what its figure draws


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    """The models that are done (all of them if the frame has no status column). A model without a value index
    (imported results whose value is not on unsupervised_study_v1's grid) gets the rank of its value among its
    method's values."""
    if "status" in frame.columns:
        frame = frame[frame["status"] == "done"]
    frame = frame.reset_index(drop=True)
    if "value" not in frame.columns:
        frame = frame.assign(value=np.nan)
    ranks = frame.groupby("method")["value"].rank(method="dense") - 1 if len(frame) else frame["value"]
    if "value_index" not in frame.columns:
        frame = frame.assign(value_index=ranks)
    elif frame["value_index"].isna().any():
        frame = frame.assign(value_index=pd.to_numeric(frame["value_index"], errors="coerce").fillna(ranks))
    return frame


def seed_groups(frame: pd.DataFrame) -> dict[str, list[str]]:
    """seed group -> the ids of its models (models equal but for the seed), in frame order."""
    column = "seed_group" if "seed_group" in frame.columns else None
    if column is None:
        keys = frame[["method", "dataset", "value_index"]].astype(str).agg("/".join, axis=1)
    else:
        keys = frame[column]
    groups: dict[str, list[str]] = {}
    for key, model_id in zip(keys, frame["model_id"].astype(str)):
        groups.setdefault(key, []).append(model_id)
    return groups


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series | None:
    if column not in frame.columns:
        return None
    values = pd.to_numeric(frame[column], errors="coerce")
    return values if values.notna().any() else None


def score_columns(frame: pd.DataFrame, representation: str = "mean") -> dict[str, str]:
    """label -> column of the disentanglement scores the frame holds (with at least one number)."""
    found = {}
    for label, (metric, key) in SCORES.items():
        column = f"eval.{representation}.{metric}.{key}"
        if _numeric(frame, column) is not None:
            found[label] = column
    return found


def _long_scores(frame: pd.DataFrame, scores: dict[str, str]) -> pd.DataFrame:
    """One row per model and score: method, dataset, seed, value_index, value, score, metric."""
    parts = []
    for label, column in scores.items():
        part = frame[["model_id", "method", "dataset", "seed", "value_index", "value"]].copy()
        part["metric"] = label
        part["score"] = pd.to_numeric(frame[column], errors="coerce")
        parts.append(part)
    if not parts:
        return pd.DataFrame(
            columns=["model_id", "method", "dataset", "seed", "value_index", "value", "metric", "score"]
        )
    long = pd.concat(parts, ignore_index=True)
    return long[long["score"].notna()].reset_index(drop=True)


def _models(n: int) -> str:
    return f"{n} model{'s' if n != 1 else ''}"


def _summary(long: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    grouped = long.groupby(by, sort=True)["score"]
    table = grouped.agg(
        n="count",
        median="median",
        q25=lambda s: s.quantile(0.25),
        q75=lambda s: s.quantile(0.75),
        mean="mean",
        std="std",
        min="min",
        max="max",
    )
    return table.reset_index()


# ---------------------------------------------------------------------------------------------------------------
# Locatello et al. Fig. 1


def tc_vs_regularisation(frame: pd.DataFrame) -> Analysis:
    """Total correlation of a Gaussian fitted to the sampled and to the mean representation, against the
    regularisation strength (the method's swept value), median over seeds, per data set; AnnealedVAE left out."""
    data = finished(frame)
    title = "Total correlation of the sampled and the mean representation (Locatello et al. Fig. 1)"
    columns = {rep: TC_KEY.format(rep=rep) for rep in ("sampled", "mean")}
    missing = [rep for rep, c in columns.items() if _numeric(data, c) is None]
    if missing:
        return Analysis(
            "tc_vs_regularisation",
            title,
            "",
            note=f"No Gaussian total correlation of the {' and '.join(missing)} representation: evaluate the "
            "'unsupervised' metric on both representations.",
        )
    data = data[~data["method"].isin(LOOSENING)]
    parts = []
    for rep, column in columns.items():
        part = data[["method", "dataset", "seed", "value_index", "value"]].copy()
        part["representation"] = rep
        part["tc"] = pd.to_numeric(data[column], errors="coerce")
        parts.append(part)
    long = pd.concat(parts, ignore_index=True).dropna(subset=["tc", "value_index"])
    if long.empty:
        return Analysis("tc_vs_regularisation", title, "", note="No model outside AnnealedVAE has both TC values.")
    curves = (
        long.groupby(["dataset", "representation", "method", "value_index", "value"])["tc"]
        .agg(n="count", median="median", q25=lambda s: s.quantile(0.25), q75=lambda s: s.quantile(0.75))
        .reset_index()
    )
    trends = []
    for (dataset, rep, method), group in curves.groupby(["dataset", "representation", "method"]):
        rho = group["value_index"].corr(group["median"], method="spearman") if len(group) > 1 else np.nan
        trends.append(
            {"dataset": dataset, "representation": rep, "method": method, "spearman": rho, "n": int(group["n"].sum())}
        )
    trends = pd.DataFrame(trends)
    n = data["model_id"].nunique()
    note = None
    if long["value_index"].nunique() < 2:
        note = "Every method has one regularisation strength here: no trend can be read."
    caption = (
        "Total correlation of a Gaussian fitted to the sampled (left) and the mean (right) representation against "
        "the regularisation strength (each method's swept value, weakest to strongest), the median over seeds with "
        "the interquartile range, one row per data set; AnnealedVAE is left out (its c_max loosens the constraint "
        "as it grows). The paper finds the sampled representation's TC falling and the mean representation's "
        f"rising with the regularisation (DIP-VAE-I excepted). Rests on {_models(n)}; the table gives each "
        "method's Spearman correlation of the median TC with the strength."
    )
    return Analysis(
        "tc_vs_regularisation",
        title,
        caption,
        {"tc_curves": curves, "tc_trends": trends},
        note,
        n,
        {"curves": curves},
    )


# ---------------------------------------------------------------------------------------------------------------
# Locatello et al. Fig. 2-3 (12) and Fig. 4 centre


def _rank_matrix(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    values = pd.DataFrame({label: pd.to_numeric(frame[c], errors="coerce") for label, c in columns.items()})
    return values.corr(method="spearman", min_periods=3)


def metric_rank_correlations(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Spearman rank correlation between every pair of disentanglement scores, per data set."""
    data = finished(frame)
    scores = score_columns(data, representation)
    title = "Rank correlation between the metrics (Locatello et al. Fig. 2 and 12)"
    if len(scores) < 2:
        return Analysis(
            "metric_correlations",
            title,
            "",
            note=f"Needs at least two disentanglement metrics; the study has {', '.join(scores) or 'none'}.",
        )
    matrices, rows = {}, []
    for dataset, group in data.groupby("dataset"):
        if len(group) < 3:
            continue
        matrix = _rank_matrix(group, scores)
        matrices[dataset] = (matrix, len(group))
        for a in matrix.index:
            for b in matrix.columns:
                rows.append({"dataset": dataset, "metric_a": a, "metric_b": b, "spearman": matrix.loc[a, b]})
    if not matrices:
        return Analysis("metric_correlations", title, "", note="Needs at least 3 models of one data set.")
    n = sum(count for _, count in matrices.values())
    caption = (
        f"Spearman rank correlation (x 100) between the disentanglement scores of the {representation} "
        "representation over all models of a data set, one matrix per data set. The paper finds all metrics but "
        "Modularity correlated, BetaVAE with FactorVAE and MIG with DCI Disentanglement most strongly. "
        f"Rests on {_models(n)} ({', '.join(f'{d}: {c}' for d, (_, c) in matrices.items())})."
    )
    return Analysis(
        "metric_correlations",
        title,
        caption,
        {"metric_correlations": pd.DataFrame(rows)},
        None,
        n,
        {"matrices": matrices},
    )


def unsupervised_vs_scores(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Spearman rank correlation of the unsupervised scores (reconstruction, KL, ELBO, TC, Wasserstein correlation,
    mutual information) with the disentanglement scores, per data set."""
    data = finished(frame)
    scores = score_columns(data, representation)
    title = "Unsupervised scores against the metrics (Locatello et al. Fig. 4 centre)"
    unsupervised = {
        label: column.format(rep=representation)
        for label, column in UNSUPERVISED.items()
        if _numeric(data, column.format(rep=representation)) is not None
    }
    if not scores or not unsupervised:
        return Analysis(
            "unsupervised_vs_scores",
            title,
            "",
            note="Needs a disentanglement metric and an unsupervised score (the training summary or the "
            "'unsupervised' metric).",
        )
    matrices, rows = {}, []
    for dataset, group in data.groupby("dataset"):
        if len(group) < 3:
            continue
        matrix = _rank_matrix(group, {**unsupervised, **scores}).loc[list(unsupervised), list(scores)]
        matrices[dataset] = (matrix, len(group))
        for a in matrix.index:
            for b in matrix.columns:
                rows.append({"dataset": dataset, "unsupervised": a, "metric": b, "spearman": matrix.loc[a, b]})
    if not matrices:
        return Analysis("unsupervised_vs_scores", title, "", note="Needs at least 3 models of one data set.")
    n = sum(count for _, count in matrices.values())
    caption = (
        "Spearman rank correlation (x 100) of unsupervised scores (rows: training reconstruction loss, KL and ELBO, "
        f"and the Gaussian total correlation, Wasserstein correlation and mutual information of the {representation} "
        "representation) with the disentanglement scores (columns), per data set. The paper sees no pattern that "
        f"would make them useful for model selection. Rests on {_models(n)}."
    )
    return Analysis(
        "unsupervised_vs_scores", title, caption, {"unsupervised_vs_scores": pd.DataFrame(rows)}, None, n,
        {"matrices": matrices},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Distributions: Locatello et al. Fig. 3 (13, 14) and Hartmann Fig. 7, 8, 11


def score_distributions(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Each score's distribution per method (all data sets), per method and data set, and per data set."""
    data = finished(frame)
    scores = score_columns(data, representation)
    title = "Score distributions by method and data set (Locatello et al. Fig. 3, Hartmann Fig. 7-8)"
    if not scores:
        return Analysis("score_distributions", title, "", note="The study holds no disentanglement score.")
    long = _long_scores(data, scores)
    n = long["model_id"].nunique()
    datasets = sorted(long["dataset"].unique())
    tables = {
        "scores_by_method": _summary(long, ["metric", "method"]),
        "scores_by_method_and_dataset": _summary(long, ["metric", "dataset", "method"]),
        "scores_by_dataset": _summary(long, ["metric", "dataset"]),
    }
    note = None if len(datasets) > 1 else "One data set: the distributions per data set are those per method."
    caption = (
        f"Distribution of each disentanglement score ({representation} representation) per method: over all data "
        "sets, hyperparameters and seeds (top, Hartmann Fig. 7), and per data set (bottom, Locatello et al. Fig. 3 "
        "left / Fig. 13, Hartmann Fig. 8); boxes span the quartiles, whiskers 1.5 IQR, dots the models beyond. "
        "The papers find the methods' ranges heavily overlapping (Hartmann: the TC-penalising beta-TCVAE and "
        f"FactorVAE ahead). Rests on {_models(n)} on {len(datasets)} data set(s): {', '.join(datasets)}."
    )
    return Analysis("score_distributions", title, caption, tables, note, n, {"long": long})


def scores_by_hyperparameter(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Each score against each method's hyperparameter value: the spread over seeds (boxes) and the median."""
    data = finished(frame)
    scores = score_columns(data, representation)
    title = "Scores against the hyperparameter, spread over seeds (Locatello et al. Fig. 3-4, Hartmann Fig. 9-11)"
    if not scores:
        return Analysis("scores_by_hyperparameter", title, "", note="The study holds no disentanglement score.")
    long = _long_scores(data, scores).dropna(subset=["value_index"])
    table = _summary(long, ["dataset", "metric", "method", "value_index", "value"])
    seeds_per_setting = long.groupby(["dataset", "metric", "method", "value_index"])["seed"].nunique()
    note = None
    if seeds_per_setting.max() < 2:
        note = "One seed per setting: the spread over seeds needs a second seed (--seeds)."
    n = long["model_id"].nunique()
    caption = (
        f"Each disentanglement score ({representation} representation) against each method's swept hyperparameter "
        "value, per data set: boxes show the spread over random seeds, the line joins the medians (Locatello et al. "
        "Fig. 3 right and Fig. 4 left; Hartmann Fig. 9 and 11). The papers find that a good seed of a bad value "
        f"often beats a bad seed of a good value. Rests on {_models(n)}, {int(seeds_per_setting.min())}-"
        f"{int(seeds_per_setting.max())} seeds per setting."
    )
    return Analysis(
        "scores_by_hyperparameter", title, caption, {"scores_by_hyperparameter": table}, note, n, {"long": long}
    )


def scores_by_seed(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Each score per seed, pooled over the settings of a data set (Hartmann: the influence of the seed)."""
    data = finished(frame)
    scores = score_columns(data, representation)
    title = "Scores by seed (Hartmann §5.1.5)"
    if not scores:
        return Analysis("scores_by_seed", title, "", note="The study holds no disentanglement score.")
    long = _long_scores(data, scores)
    if long["seed"].nunique() < 2:
        return Analysis("scores_by_seed", title, "", note="One seed: comparing seeds needs a second seed (--seeds).")
    n = long["model_id"].nunique()
    caption = (
        f"Distribution of each disentanglement score ({representation} representation) per random seed, pooled "
        "over methods, hyperparameters and data sets. No seed is better than another by design; what differs is "
        f"which seed is lucky for which setting. Rests on {_models(n)}."
    )
    return Analysis(
        "scores_by_seed",
        title,
        caption,
        {"scores_by_seed": _summary(long, ["metric", "seed"])},
        None,
        n,
        {"long": long},
    )


# ---------------------------------------------------------------------------------------------------------------
# Locatello et al. §5.3: variance explained


def _r2(values: np.ndarray, groups: pd.Series) -> float:
    """R^2 of ordinary least squares on one-hot `groups` = between-group sum of squares / total sum of squares."""
    total = float(np.sum((values - values.mean()) ** 2))
    if total == 0.0:
        return float("nan")
    means = pd.Series(values).groupby(groups.to_numpy()).transform("mean").to_numpy()
    return 1.0 - float(np.sum((values - means) ** 2)) / total


def variance_explained(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Share of each score's variance (per data set) explained by the method, by method x hyperparameter, and
    left to the seed: R^2 of least squares on the method (categorical) and on method x value (categorical)."""
    data = finished(frame)
    scores = score_columns(data, representation)
    title = "Variance explained by method, hyperparameter and seed (Locatello et al. §5.3)"
    if not scores:
        return Analysis("variance_explained", title, "", note="The study holds no disentanglement score.")
    long = _long_scores(data, scores).dropna(subset=["value_index"])
    rows = []
    for (dataset, metric), group in long.groupby(["dataset", "metric"]):
        if len(group) < 3:
            continue
        values = group["score"].to_numpy(dtype=float)
        method = group["method"].astype(str)
        setting = method + "/" + group["value_index"].astype(int).astype(str)
        r2_method, r2_setting = _r2(values, method), _r2(values, setting)
        rows.append(
            {
                "dataset": dataset,
                "metric": metric,
                "n": len(group),
                "r2_method": r2_method,
                "r2_method_hyperparameter": r2_setting,
                "method": r2_method,
                "hyperparameter": r2_setting - r2_method,
                "seed": 1.0 - r2_setting,
            }
        )
    if not rows:
        return Analysis("variance_explained", title, "", note="Needs at least 3 models with one score on one data set.")
    table = pd.DataFrame(rows)
    notes = []
    if long.groupby(["dataset", "metric", "method", "value_index"])["seed"].nunique().max() < 2:
        notes.append(
            "One seed per setting: method x hyperparameter explains everything; the seed's share needs a second seed."
        )
    if long["method"].nunique() < 2:
        notes.append("One method: the method explains nothing by construction.")
    n = long["model_id"].nunique()
    caption = (
        f"Share of each score's variance ({representation} representation) within a data set explained by the "
        "method alone (R^2 of least squares on the method as a category), added by its hyperparameter value (R^2 on "
        "method x value, minus the former), and left to the random seed (1 - R^2 on method x value). The paper "
        "explains 37% with the method and 59% with method x value on average. Mean over the rows: method "
        f"{table['r2_method'].mean():.0%}, method x value {table['r2_method_hyperparameter'].mean():.0%}. "
        f"Rests on {_models(n)}."
    )
    return Analysis(
        "variance_explained",
        title,
        caption,
        {"variance_explained": table},
        " ".join(notes) or None,
        n,
        {"table": table},
    )


# ---------------------------------------------------------------------------------------------------------------
# Locatello et al. Table 1: transfer of model selection


def _score_array(data: pd.DataFrame, scores: dict[str, str]):
    """A[metric, dataset, setting, seed] over the settings and seeds that every (metric, data set) shares."""
    datasets = sorted(data["dataset"].unique())
    data = data.dropna(subset=["value_index"])
    keyed = data.assign(setting=data["method"].astype(str) + "/" + data["value_index"].astype(int).astype(str))
    settings = None
    seeds = None
    for dataset in datasets:
        part = keyed[keyed["dataset"] == dataset]
        settings = set(part["setting"]) if settings is None else settings & set(part["setting"])
        seeds = set(part["seed"]) if seeds is None else seeds & set(part["seed"])
    settings, seeds = sorted(settings or []), sorted(seeds or [])
    array = np.full((len(scores), len(datasets), len(settings), len(seeds)), np.nan)
    for m, column in enumerate(scores.values()):
        for d, dataset in enumerate(datasets):
            part = keyed[keyed["dataset"] == dataset]
            table = part.pivot_table(index="setting", columns="seed", values=column, aggfunc="mean")
            table = table.reindex(index=settings, columns=seeds)
            array[m, d] = table.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return array, datasets, settings, seeds


def transfer_probabilities(array: np.ndarray, draws: int = 10_000, seed: int = 0) -> dict[tuple[str, str], tuple]:
    """Locatello et al. Table 1 by Monte Carlo. array: scores [metric, data set, setting, seed].

    A draw: a seed s, a metric m and a data set d; the setting h* with the best score on (m, d, s) is selected.
    The target: the same or a random other metric m', the same or a random other data set d', and a random other
    seed s'. The draw counts as a success when the selected setting's model scores at least as well on (m', d', s')
    as a model of a uniformly random setting at the same seed (ties count, as "outperforms or performs equally
    well" in the paper). Returns (metric, data set) -> (probability, successes, valid draws), "same"/"other";
    cells without a second metric or data set are absent.
    """
    rng = np.random.default_rng(seed)
    num_m, num_d, num_h, num_s = array.shape
    cells = {}
    for metric_kind in ("same", "other"):
        for dataset_kind in ("same", "other"):
            if (metric_kind == "other" and num_m < 2) or (dataset_kind == "other" and num_d < 2):
                continue
            m = rng.integers(num_m, size=draws)
            d = rng.integers(num_d, size=draws)
            s = rng.integers(num_s, size=draws)
            m2 = m if metric_kind == "same" else (m + rng.integers(1, num_m, size=draws)) % num_m
            d2 = d if dataset_kind == "same" else (d + rng.integers(1, num_d, size=draws)) % num_d
            s2 = (s + rng.integers(1, num_s, size=draws)) % num_s
            source = array[m, d, :, s]  # [draws, settings]
            target = array[m2, d2, :, s2]
            has_source = np.isfinite(source).any(axis=1)
            chosen = np.argmax(np.where(np.isfinite(source), source, -np.inf), axis=1)
            keys = np.where(np.isfinite(target), rng.random(target.shape), -1.0)
            random_pick = np.argmax(keys, axis=1)
            rows = np.arange(draws)
            picked, random_value = target[rows, chosen], target[rows, random_pick]
            valid = has_source & np.isfinite(picked) & np.isfinite(random_value)
            wins = int(np.sum(picked[valid] >= random_value[valid]))
            total = int(valid.sum())
            cells[(metric_kind, dataset_kind)] = (wins / total if total else float("nan"), wins, total)
    return cells


def selection_transfer(
    frame: pd.DataFrame, representation: str = "mean", draws: int = 10_000, seed: int = 0
) -> Analysis:
    """Locatello et al. Table 1: how often the setting selected on one seed, metric and data set beats a random
    model on another seed, on the same or another metric and the same or another data set."""
    data = finished(frame)
    scores = score_columns(data, representation)
    title = "Transfer of model selection (Locatello et al. Table 1)"
    if not scores:
        return Analysis("selection_transfer", title, "", note="The study holds no disentanglement score.")
    array, datasets, settings, seeds = _score_array(data, scores)
    if len(seeds) < 2:
        return Analysis(
            "selection_transfer",
            title,
            "",
            note="Needs a second seed of every setting (--seeds): the selected setting is judged on another seed.",
        )
    if len(settings) < 2:
        return Analysis(
            "selection_transfer",
            title,
            "",
            note="Needs at least two settings (methods x hyperparameter values) shared by the data sets.",
        )
    cells = transfer_probabilities(array, draws, seed)
    rows = []
    for (metric_kind, dataset_kind), paper in PAPER_TRANSFER.items():
        p, wins, total = cells.get((metric_kind, dataset_kind), (float("nan"), 0, 0))
        rows.append(
            {
                "metric": metric_kind,
                "dataset": dataset_kind,
                "probability": p,
                "successes": wins,
                "draws": total,
                "paper": paper,
            }
        )
    table = pd.DataFrame(rows)
    notes = []
    if len(scores) < 2:
        notes.append("One metric: the 'other metric' cells need a second metric.")
    if len(datasets) < 2:
        notes.append("One data set: the 'other data set' cells need a second data set (--datasets).")
    n = int(np.isfinite(array).any(axis=0).sum())
    chance = 0.5 + 0.5 / len(settings)
    caption = (
        f"Probability that the setting (method x hyperparameter value) with the best score on one random seed, "
        "metric and data set scores at least as well as a random setting on another random seed, on the same or a "
        f"random other metric and data set ({draws:,} draws; {len(scores)} metrics, {len(datasets)} data set(s), "
        f"{len(settings)} settings, {len(seeds)} seeds; chance is {chance:.1%}: a tie only when both picks agree). "
        "The paper: 80.7% (same metric, same data set), 59.3% (same metric, other data set), 62.6% (other metric, "
        f"same data set), 54.9% (both other). Rests on {_models(n)}."
    )
    return Analysis(
        "selection_transfer",
        title,
        caption,
        {"selection_transfer": table},
        " ".join(notes) or None,
        n,
        {"table": table},
    )


# ---------------------------------------------------------------------------------------------------------------
# Locatello et al. Fig. 5: downstream


def downstream_targets(frame: pd.DataFrame, representation: str = "mean") -> dict[str, pd.Series]:
    """label -> per-model downstream quantity: mean test accuracy per training size and predictor, and sample
    efficiency (accuracy with 100 training points / with the most points the study used; the paper's 10,000)."""
    targets = {}
    for short, metric in DOWNSTREAM.items():
        prefix = f"eval.{representation}.{metric}."
        sizes = sorted(
            int(c[len(prefix) :].split(":")[0])
            for c in frame.columns
            if isinstance(c, str) and c.startswith(prefix) and c.endswith(":mean_test_accuracy")
        )
        for size in sizes:
            values = _numeric(frame, f"{prefix}{size}:mean_test_accuracy")
            if values is not None:
                targets[f"{short} accuracy ({size})"] = values
        if 100 in sizes and sizes[-1] > 100:
            top = sizes[-1]
            efficiency = _numeric(frame, f"{prefix}{top}:mean_test_accuracy")
            targets[f"{short} efficiency (100/{top})"] = _numeric(frame, f"{prefix}100:mean_test_accuracy") / efficiency
    return targets


def downstream_correlations(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Spearman rank correlation of each disentanglement score with downstream accuracy and sample efficiency."""
    data = finished(frame)
    scores = score_columns(data, representation)
    title = "Metrics against downstream accuracy and sample efficiency (Locatello et al. Fig. 5)"
    targets = downstream_targets(data, representation)
    if not scores or not targets:
        return Analysis(
            "downstream_correlations",
            title,
            "",
            note="Needs a disentanglement metric and a downstream task (downstream_logistic_regression or "
            "downstream_boosted_trees).",
        )
    matrices, rows = {}, []
    frame_targets = pd.DataFrame(targets)
    for dataset, group in data.groupby("dataset"):
        if len(group) < 3:
            continue
        columns = {**scores}
        values = pd.DataFrame({label: pd.to_numeric(group[c], errors="coerce") for label, c in columns.items()})
        joined = pd.concat([values, frame_targets.loc[group.index]], axis=1)
        matrix = joined.corr(method="spearman", min_periods=3).loc[list(scores), list(targets)]
        matrices[dataset] = (matrix, len(group))
        for a in matrix.index:
            for b in matrix.columns:
                rows.append({"dataset": dataset, "metric": a, "downstream": b, "spearman": matrix.loc[a, b]})
    if not matrices:
        return Analysis("downstream_correlations", title, "", note="Needs at least 3 models of one data set.")
    n = sum(count for _, count in matrices.values())
    caption = (
        f"Spearman rank correlation (x 100) of each disentanglement score ({representation} representation) with "
        "the downstream tasks' mean test accuracy per number of training points, and with the sample efficiency "
        "(accuracy with 100 points over accuracy with the most points used), per data set. The paper finds the "
        "metrics but Modularity correlated with accuracy on the dSprites variants, and no sign that higher "
        f"disentanglement means a better sample efficiency. Rests on {_models(n)}."
    )
    return Analysis(
        "downstream_correlations", title, caption, {"downstream_correlations": pd.DataFrame(rows)}, None, n,
        {"matrices": matrices},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Model selection without labels: Duan et al. (2020), Holtz et al. (2022) Tables 1 and 3, Locatello et al. §5.4


def _specifications(data: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per seed group (specification): dataset, seed_group, seeds (models in it) and the mean of each of
    `columns` over its models (Holtz et al. compare specifications by their realisations' mean scores)."""
    group = data["seed_group"] if "seed_group" in data.columns else None
    if group is None:
        group = data[["method", "dataset", "value_index"]].astype(str).agg("/".join, axis=1)
    values = pd.DataFrame({c: pd.to_numeric(data[c], errors="coerce") for c in columns})
    values["dataset"], values["seed_group"] = data["dataset"].to_numpy(), group.to_numpy()
    grouped = values.groupby(["dataset", "seed_group"], sort=True)
    means = grouped[columns].mean()
    means["seeds"] = grouped.size()
    return means.reset_index()


def _selection_inputs(frame: pd.DataFrame, representation: str = "mean"):
    """(finished models, supervised {label: column}, unsupervised {label: (column, direction)}) present."""
    data = finished(frame)
    scores = score_columns(data, representation)
    unsupervised = {
        label: (column.format(rep=representation), direction)
        for label, (column, direction) in SELECTION_SCORES.items()
        if _numeric(data, column.format(rep=representation)) is not None
    }
    return data, scores, unsupervised


def _selection_units(data, scores, unsupervised):
    """(level, units frame) pairs: per specification (group means; every unsupervised score) and per model (the
    scores that differ between a group's models, i.e. all but the training-dynamics score)."""
    columns = list(scores.values()) + [c for c, _ in unsupervised.values()]
    yield "specification", _specifications(data, list(dict.fromkeys(columns)))
    yield "model", data.assign(seeds=1)


def _missing_selection_note(unsupervised: dict) -> str | None:
    missing = [label for label in ("UDR (lasso)", "training dynamics") if label not in unsupervised]
    if not missing:
        return None
    how = {
        "UDR (lasso)": "`untwine select udr S`",
        "training dynamics": "`untwine select dynamics S` (the study trained with trace_every > 0)",
    }
    return "No " + " and no ".join(f"{m} score ({how[m]})" for m in missing) + " in this study yet."


def _no_selection(key: str, title: str, unsupervised: dict) -> Analysis:
    """The note-only Analysis of a selection analysis that lacks a supervised metric or an unsupervised score."""
    note = _missing_selection_note(unsupervised) if not unsupervised else None
    return Analysis(
        key, title, "", note=note or "Needs a supervised disentanglement metric and an unsupervised selection score."
    )


def selection_correlations(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Spearman rank correlation between each unsupervised selection score (oriented so that higher = better) and
    each supervised metric, per data set: across specifications (the means over each seed group, Holtz et al.
    Table 1) and across models (Duan et al.)."""
    data, scores, unsupervised = _selection_inputs(frame, representation)
    title = "Unsupervised selection scores against the metrics (Holtz et al. Table 1, Duan et al.)"
    if not scores or not unsupervised:
        return _no_selection("selection_correlations", title, unsupervised)
    rows, matrices = [], {}
    for level, units in _selection_units(data, scores, unsupervised):
        for dataset, part in units.groupby("dataset", sort=True):
            matrix = pd.DataFrame(np.nan, index=list(unsupervised), columns=list(scores))
            for label, (column, direction) in unsupervised.items():
                if level == "model" and label in PER_SPECIFICATION:
                    continue
                for metric, target in scores.items():
                    pair = pd.DataFrame({"u": direction * pd.to_numeric(part[column], errors="coerce"),
                                         "s": pd.to_numeric(part[target], errors="coerce")}).dropna()  # fmt: skip
                    if len(pair) < 3:
                        continue
                    rho = _spearman(pair["u"], pair["s"])  # NaN (no warning) if either is constant
                    seeds = int(part.loc[pair.index, "seeds"].median())
                    paper_seeds, paper = (
                        _paper_table1(label, metric, seeds) if level == "specification" else (None, None)
                    )
                    rows.append({"dataset": dataset, "level": level, "unsupervised": label, "metric": metric,
                                 "n": len(pair), "seeds": seeds, "spearman": rho, "paper": paper,
                                 "paper_seeds": paper_seeds})  # fmt: skip
                    matrix.loc[label, metric] = rho
            if level == "specification" and matrix.notna().any().any():
                matrices[dataset] = (matrix.dropna(how="all"), int(part["seeds"].sum()))
    if not rows:
        return Analysis(
            "selection_correlations", title, "", note="Needs at least 3 specifications (seed groups) of one data set."
        )
    table = pd.DataFrame(rows)
    n = int(data["model_id"].nunique())
    caption = (
        "Spearman rank correlation between each unsupervised selection score and each supervised metric "
        f"({representation} representation), per data set; the unsupervised scores are oriented so that a positive "
        "correlation means agreement (UDR: higher is better; the training-dynamics score, the Gaussian total "
        "correlation and the Wasserstein correlation: lower is better). Figure: across specifications (seed "
        "groups), each scored by its unsupervised score and by the mean of its models' supervised scores, as "
        "Holtz et al. do; the table also has the correlations across models (per-model scores only). Holtz et al. "
        "Table 1 (training dynamics, 25 specifications of beta x latent size on dSprites): BetaVAE 0.54 / 0.57 / "
        "0.61, FactorVAE 0.56 / 0.60 / 0.60, MIG 0.60 / 0.65 / 0.69 with 5 / 10 / 25 seeds per specification "
        f"(column 'paper', at the seed count nearest this study's). Rests on {_models(n)}."
    )
    return Analysis(
        "selection_correlations",
        title,
        caption,
        {"selection_correlations": table},
        _missing_selection_note(unsupervised),
        n,
        {"matrices": matrices} if matrices else {},
    )


def _paper_table1(label: str, metric: str, seeds: int) -> tuple[int | None, float | None]:
    """Holtz et al. Table 1's value for the training-dynamics score at the seed count nearest `seeds`."""
    if label != "training dynamics" or metric not in PAPER_DYNAMICS:
        return None, None
    nearest = min(PAPER_DYNAMICS[metric], key=lambda n: abs(n - seeds))
    return nearest, PAPER_DYNAMICS[metric][nearest][0]


def _tied(values: pd.Series) -> pd.Series:
    """`values` to 12 significant digits, so that means equal but for their summation order (e.g. BetaVAE
    accuracies 0.58 averaged over the same models in another order) tie when ranked, whichever way they were
    summed."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return numbers.map(lambda v: float(f"{v:.12g}") if np.isfinite(v) else v)


def _spearman(u: pd.Series, s: pd.Series) -> float:
    """Spearman rho of two aligned series over their common non-missing entries (ties: values equal to 12
    significant digits, `_tied`); NaN if either is constant."""
    pair = pd.DataFrame({"u": _tied(u), "s": _tied(s)}).dropna()
    if len(pair) < 3 or pair["u"].nunique() < 2 or pair["s"].nunique() < 2:
        return np.nan
    return float(pair["u"].corr(pair["s"], method="spearman"))


def _draws_of_group(models: pd.DataFrame, label: str, column: str, direction: int):
    """(size, draw, model ids, oriented unsupervised score of the specification) for each draw of a seed group's
    seeds (`models`: the group's finished models sorted by seed; `selection.seeds`):
    - training dynamics: the subset scores the group stores (`dynamics.subsets`, recomputed at scoring time);
    - UDR: each member's median pair score against the draw's other members (`udr.*.pair_scores`), averaged;
    - a per-model score (TC, Wasserstein correlation): the mean over the draw's members."""
    from untwine.selection.seeds import all_subsets, udr_subset_score

    ids, seeds = models["model_id"].astype(str).tolist(), [int(s) for s in models["seed"]]
    by_seed = dict(zip(seeds, ids))
    if label in PER_SPECIFICATION:
        stored = [v for v in models.get("dynamics.subsets", pd.Series(dtype=object)) if isinstance(v, list) and v]
        if not stored:
            return
        draws: dict[int, int] = {}
        for entry in stored[0]:
            members = [int(seed) for seed in entry["seeds"]]
            if any(seed not in by_seed for seed in members):
                continue  # scored when the group had other seeds
            draw = draws[len(members)] = draws.get(len(members), -1) + 1
            yield len(members), draw, [by_seed[seed] for seed in members], direction * float(entry["score"])
        return
    pairs_column = column.replace(".model_score", ".pair_scores") if column.startswith("udr.") else None
    if pairs_column is not None:
        pairs = models.get(pairs_column, pd.Series(dtype=object)).tolist()
        if len(pairs) != len(ids) or not all(isinstance(p, dict) and p for p in pairs):
            return
    values = pd.to_numeric(models[column], errors="coerce").to_numpy()
    for size, draw, positions in all_subsets(len(ids)):
        if pairs_column is not None:
            subset = [str(seeds[p]) for p in positions]
            try:
                score = np.mean([udr_subset_score(pairs[p], str(seeds[p]), subset) for p in positions])
            except InvalidInputError:  # pair scores from when the group had other seeds
                return
        else:
            score = float(np.mean(values[list(positions)]))
        yield size, draw, [ids[p] for p in positions], direction * score


def selection_by_seeds(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Holtz et al. Table 1 as the number of seeds per specification grows: for n = 2, 3, ... seeds, the Spearman
    correlation across specifications (per data set) between each unsupervised score recomputed from n of a
    specification's realisations and the mean supervised metric of the same n models; mean and std over draws of
    n seeds (`selection.seeds.seed_subsets`), and the value with the first n seeds."""
    data, scores, unsupervised = _selection_inputs(frame, representation)
    title = "Unsupervised scores against the metrics as the number of seeds grows (Holtz et al. Table 1)"
    if not scores or not unsupervised:
        return _no_selection("selection_by_seeds", title, unsupervised)
    groups = data.assign(seed_group=data["seed_group"] if "seed_group" in data.columns else
                         data[["method", "dataset", "value_index"]].astype(str).agg("/".join, axis=1))  # fmt: skip
    metric_values = {metric: pd.to_numeric(data[target], errors="coerce").set_axis(data["model_id"].astype(str))
                     for metric, target in scores.items()}  # fmt: skip
    draws = []
    for (dataset, group), models in groups.groupby(["dataset", "seed_group"], sort=True):
        models = models.sort_values("seed")
        if len(models) < 2 or models["seed"].duplicated().any():
            continue
        for label, (column, direction) in unsupervised.items():
            for size, draw, members, value in _draws_of_group(models, label, column, direction):
                row = {"dataset": dataset, "seed_group": group, "unsupervised": label, "seeds": size, "draw": draw,
                       "u": value}  # fmt: skip
                draws.append({**row, **{metric: float(v.loc[members].mean()) for metric, v in metric_values.items()}})
    if not draws:
        return Analysis("selection_by_seeds", title, "", note="Needs seed groups of at least 2 models with scores.")
    draws = pd.DataFrame(draws)
    per_draw = []
    for (dataset, label, size, draw), part in draws.groupby(["dataset", "unsupervised", "seeds", "draw"], sort=True):
        for metric in scores:
            per_draw.append({"dataset": dataset, "unsupervised": label, "metric": metric, "seeds": size,
                             "draw": draw, "specifications": len(part),
                             "spearman": _spearman(part["u"], part[metric])})  # fmt: skip
    per_draw = pd.DataFrame(per_draw)
    rows = []
    for (dataset, label, metric, size), part in per_draw.groupby(
        ["dataset", "unsupervised", "metric", "seeds"], sort=True
    ):
        rho = part["spearman"].dropna()
        if rho.empty:
            continue
        paper = PAPER_DYNAMICS.get(metric, {}).get(size) if label == "training dynamics" else None
        first = part.loc[part["draw"] == 0, "spearman"]
        rows.append({"dataset": dataset, "unsupervised": label, "metric": metric, "seeds": size,
                     "draws": len(rho), "specifications": int(part["specifications"].median()),
                     "spearman_mean": rho.mean(), "spearman_std": rho.std(ddof=1) if len(rho) > 1 else np.nan,
                     "spearman_first": first.iloc[0] if len(first) else np.nan,
                     "paper_mean": paper[0] if paper else np.nan,
                     "paper_std": paper[1] if paper else np.nan})  # fmt: skip
    if not rows:
        return Analysis(
            "selection_by_seeds", title, "", note="Needs at least 3 specifications (seed groups) of one data set."
        )
    table = pd.DataFrame(rows)
    n = int(data["model_id"].nunique())
    caption = (
        "For n seeds per specification: each specification's unsupervised score recomputed from n of its "
        "realisations (training dynamics: its MMD score over the joint embedding of the n realisations' traces; "
        "UDR: each of the n models scored against the other n - 1 only, then averaged; TC, Wasserstein "
        "correlation: the mean over the n models), ranked across the specifications of a data set against the mean "
        f"supervised metric of the same n models ({representation} representation; unsupervised scores oriented so "
        "that a positive correlation means agreement). Mean and standard deviation of the Spearman correlation over "
        "draws of n seeds (all subsets of n of the S seeds when there are at most 10, else the first n and 9 random "
        "ones; the same seed positions in every specification), and the value with the first n seeds. Holtz et "
        "al. Table 1 (training dynamics, 25 specifications on dSprites): BetaVAE 0.54 / 0.57 / 0.61, FactorVAE "
        "0.56 / 0.60 / 0.60, MIG 0.60 / 0.65 / 0.69 at n = 5 / 10 / 25 (columns 'paper_*'; the paper does not say "
        f"what its ± is taken over). Rests on {_models(n)}."
    )
    return Analysis(
        "selection_by_seeds", title, caption, {"selection_by_seeds": table, "selection_by_seeds_draws": per_draw},
        _missing_selection_note(unsupervised), n, {"table": table},
    )  # fmt: skip


def select_by(unsupervised: np.ndarray, supervised: np.ndarray) -> dict:
    """How good the unit with the best unsupervised score (higher = better) is by the supervised score: its score
    (the mean over units tied for best), the best and the worst score, the mean of a uniformly random unit, its rank
    (1 = best; ties share the best rank), and the probability that it scores at least as well as a random unit
    (Locatello et al. §5.4 / Table 1's "outperforms or performs equally well"), both averaged over tied choices."""
    u, s = np.asarray(unsupervised, dtype=float), np.asarray(supervised, dtype=float)
    chosen = np.flatnonzero(u == u.max())
    picked = s[chosen]
    return {
        "chosen": float(picked.mean()),
        "best": float(s.max()),
        "random": float(s.mean()),
        "worst": float(s.min()),
        "rank": float(np.mean([1 + np.sum(s > v) for v in picked])),
        "p_at_least_random": float(np.mean([np.mean(v >= s) for v in picked])),
        "regret": float(s.max() - picked.mean()),
    }


def selection_quality(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Selecting by an unsupervised score, judged by each supervised metric, per data set: the supervised score of
    the specification (and of the model) the unsupervised score picks, against the best, a random and the worst
    one, and the probability that the pick scores at least as well as a random one."""
    data, scores, unsupervised = _selection_inputs(frame, representation)
    title = "Selecting by an unsupervised score (Duan et al., Holtz et al., Locatello et al. §5.4)"
    if not scores or not unsupervised:
        return _no_selection("selection_quality", title, unsupervised)
    rows = []
    for level, units in _selection_units(data, scores, unsupervised):
        for dataset, part in units.groupby("dataset", sort=True):
            for label, (column, direction) in unsupervised.items():
                if level == "model" and label in PER_SPECIFICATION:
                    continue
                for metric, target in scores.items():
                    pair = pd.DataFrame({"u": direction * pd.to_numeric(part[column], errors="coerce"),
                                         "s": pd.to_numeric(part[target], errors="coerce")}).dropna()  # fmt: skip
                    if len(pair) < 2:
                        continue
                    quality = select_by(pair["u"].to_numpy(), pair["s"].to_numpy())
                    rows.append({"dataset": dataset, "level": level, "unsupervised": label, "metric": metric,
                                 "n": len(pair), **quality})  # fmt: skip
    if not rows:
        return Analysis("selection_quality", title, "", note="Needs at least 2 specifications of one data set.")
    table = pd.DataFrame(rows)
    n = int(data["model_id"].nunique())
    caption = (
        "For each data set, unsupervised score and supervised metric: the supervised score of the specification "
        "(seed group; its models' mean) or of the model that the unsupervised score ranks first ('chosen'), beside "
        "the best, the mean of a random pick ('random') and the worst; its rank (1 = best); and the probability "
        "that it scores at least as well as a uniformly random pick (1/n: no better than the worst; 1: the best; "
        "a random pick gets (n + 1) / 2n on average without ties). Ties in the unsupervised score are averaged over. "
        f"Rests on {_models(n)}."
    )
    return Analysis(
        "selection_quality",
        title,
        caption,
        {"selection_quality": table},
        _missing_selection_note(unsupervised),
        n,
        {"table": table},
    )


def selection_fairness(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Holtz et al. Table 4 ("unfairness" column): Spearman correlation, per data set, between each score -- the
    unsupervised selection scores (oriented so that higher = better) and the supervised metrics -- and the
    unfairness of downstream predictions (Locatello et al. 2019's mean unfairness, metric `fairness`; lower =
    fairer): across specifications (group means, as the paper) and across models (per-model scores)."""
    data, scores, unsupervised = _selection_inputs(frame, representation)
    title = "Scores against the unfairness of downstream predictions (Holtz et al. Table 4)"
    metric, key = UNFAIRNESS
    target = f"eval.{representation}.{metric}.{key}"
    if _numeric(data, target) is None:
        return Analysis(
            "selection_fairness", title, "",
            note="No unfairness score: evaluate the study with the fairness metric (metrics = [..., \"fairness\"]).",
        )  # fmt: skip
    ranked = {label: (column, direction) for label, (column, direction) in unsupervised.items()}
    ranked.update({label: (column, 1) for label, column in scores.items()})
    rows, matrices = [], {}
    for level, units in _selection_units(data, {**scores, "unfairness": target}, unsupervised):
        for dataset, part in units.groupby("dataset", sort=True):
            for label, (column, direction) in ranked.items():
                if level == "model" and label in PER_SPECIFICATION:
                    continue
                u = direction * pd.to_numeric(part[column], errors="coerce")
                rho = _spearman(u, pd.to_numeric(part[target], errors="coerce"))
                count = int(pd.concat([u, part[target]], axis=1).dropna().shape[0])
                if count < 3:
                    continue
                rows.append({"dataset": dataset, "level": level, "score": label,
                             "kind": "unsupervised" if label in unsupervised else "supervised", "n": count,
                             "spearman": rho, "paper_unfairness": PAPER_FAIRNESS.get(label, np.nan),
                             "paper_clustering": PAPER_CLUSTERING.get(label, np.nan)})  # fmt: skip
            if level == "specification":
                found = [r for r in rows if r["dataset"] == dataset and r["level"] == level]
                if found:
                    matrix = pd.DataFrame(
                        {"unfairness": [r["spearman"] for r in found]}, index=[r["score"] for r in found]
                    )
                    matrices[dataset] = (matrix, int(part["seeds"].sum()))
    if not rows:
        return Analysis("selection_fairness", title, "", note="Needs at least 3 specifications of one data set.")
    table = pd.DataFrame(rows)
    n = int(data["model_id"].nunique())
    caption = (
        "Spearman rank correlation between each score and the unfairness of downstream predictions (Locatello et "
        f"al. 2019, mean over targets and sensitive factors of the total-variation distance; {representation} "
        "representation; lower = fairer), per data set, across specifications (each scored by the mean over its "
        "models, as Holtz et al.) and across models. Unsupervised scores are oriented so that higher = better, so "
        "a negative correlation means that a better score goes with fairer predictions. Holtz et al. Table 4 on "
        "dSprites: training dynamics -0.72, BetaVAE -0.75, FactorVAE -0.80, MIG -0.66 (column 'paper_unfairness'); "
        "its other column, the sample efficiency of an RL agent on COBRA's clustering task ('paper_clustering': "
        "-0.59 / -0.51 / -0.56 / -0.48), needs MONet, COBRA's exploration policy and transition model, which untwine "
        f"does not have (docs/design-notes.md). Rests on {_models(n)}."
    )
    return Analysis(
        "selection_fairness", title, caption, {"selection_fairness": table}, _missing_selection_note(unsupervised),
        n, {"matrices": matrices} if matrices else {},
    )  # fmt: skip


def label_noise_columns(frame: pd.DataFrame, representation: str = "mean") -> list[tuple[str, int, str, str]]:
    """(metric label, regime, clean column, noisy column) for every supervised score the frame holds with noisy
    labels (`eval.<rep>.<metric>_label_noise<r>.<key>`, selection/label_noise.py)."""
    found = []
    for label, (metric, key) in SCORES.items():
        clean = f"eval.{representation}.{metric}.{key}"
        for regime in (1, 2, 3):
            noisy = f"eval.{representation}.{metric}_label_noise{regime}.{key}"
            if _numeric(frame, clean) is not None and _numeric(frame, noisy) is not None:
                found.append((label, regime, clean, noisy))
    return found


def label_noise_robustness(frame: pd.DataFrame, representation: str = "mean") -> Analysis:
    """Holtz et al. Table 3: Pearson correlation, over models, between each supervised metric computed with noisy
    labels (noise regime 1, 2, 3 of their Table 2) and the same metric with the true labels, per data set."""
    data = finished(frame)
    title = "Supervised metrics under label noise (Holtz et al. Tables 2-3)"
    found = label_noise_columns(data, representation)
    if not found:
        return Analysis(
            "label_noise",
            title,
            "",
            note="No noisy-label scores: run the study with label noise (`--label-noise 1,2,3`, or label_noise = "
            "[1, 2, 3] in the TOML's [study]), or evaluate with `--option <metric>.label_noise=r`.",
        )
    rows = []
    for dataset, part in data.groupby("dataset", sort=True):
        for label, regime, clean, noisy in found:
            pair = pd.DataFrame(
                {
                    "clean": pd.to_numeric(part[clean], errors="coerce"),
                    "noisy": pd.to_numeric(part[noisy], errors="coerce"),
                }
            ).dropna()
            if len(pair) < 3:
                continue
            paper = PAPER_LABEL_NOISE.get(label)
            rows.append(
                {
                    "dataset": dataset,
                    "metric": label,
                    "regime": regime,
                    "n": len(pair),
                    "pearson": pair["clean"].corr(pair["noisy"], method="pearson"),
                    "mean_clean": pair["clean"].mean(),
                    "mean_noisy": pair["noisy"].mean(),
                    "paper": paper[regime - 1] if paper else np.nan,
                }
            )
    if not rows:
        return Analysis("label_noise", title, "", note="Needs at least 3 models with clean and noisy scores.")
    table = pd.DataFrame(rows)
    n = int(data["model_id"].nunique())
    caption = (
        "Pearson correlation, over the models of a data set, between a supervised metric computed with noisy "
        f"factor labels and with the true ones ({representation} representation; noise regimes of Holtz et al. "
        "Table 2: each factor perturbed with probability 0.05-0.1 / 0.1-0.2 / 0.3). Holtz et al. Table 3 on "
        "dSprites: BetaVAE 0.69 / 0.54 / 0.47, FactorVAE 0.84 / 0.75 / 0.63, MIG 0.86 / 0.76 / 0.67 for regimes "
        "1 / 2 / 3 (column 'paper'); the unsupervised scores (UDR, training dynamics) use no labels, so theirs is "
        f"1 by construction. Rests on {_models(n)}."
    )
    return Analysis("label_noise", title, caption, {"label_noise": table}, None, n, {"table": table})


ANALYSES = (
    tc_vs_regularisation,
    metric_rank_correlations,
    score_distributions,
    scores_by_hyperparameter,
    scores_by_seed,
    variance_explained,
    selection_transfer,
    unsupervised_vs_scores,
    downstream_correlations,
    selection_correlations,
    selection_by_seeds,
    selection_quality,
    selection_fairness,
    label_noise_robustness,
)


def run_all(frame: pd.DataFrame) -> list[Analysis]:
    """Every analysis of the study's frame, in the report's order."""
    return [analysis(frame) for analysis in ANALYSES]
