"""Headline scores: the few numbers per metric a reader looks at first, defined once for the terminal summary,
the run report and the study report.

Every protocol in `untwine.metrics.PROTOCOLS` names its headline keys in `HEADLINES` (a test fails for one that
does not). They are the scores the papers report: BetaVAE and FactorVAE eval accuracy, MIG, DCI disentanglement /
completeness / informativeness, SAP, modularity, explicitness, IRS, Gaussian total correlation, downstream sample
efficiency and 10,000-point test accuracy (Locatello et al. 2019, §5), and mean unfairness (Locatello et al. 2019b,
`mean_fairness:mean_pred:mean_sens`, spec §5.9), plus Chen et al.'s posterior MIG.

    HEADLINES["dci"]          # (Headline("dci", "disentanglement", "DCI disentanglement", "higher"), ...)
    headline_keys("dci")      # ("disentanglement", "completeness", "informativeness_test")
    headline_table(results)   # flat results (results.json) -> one HeadlineRow per headline score evaluated
    row.label, row.values[("trained", "mean")], row.values[("untrained", "sampled")]   # None where not evaluated
    result_key / parse_result_key   # ("mig", "discrete_mig", "mean", "untrained") <-> "untrained.eval.mean.mig..."
    METRIC_LABELS["modularity_explicitness"]   # a metric's display name
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Headline:
    """One headline score: result key `key` of metric `metric`, shown as `label`; `better` is "higher" or
    "lower" (which direction a reader should hope for)."""

    metric: str
    key: str
    label: str
    better: str = "higher"


def _downstream(metric: str, short: str) -> tuple[Headline, ...]:
    return (
        Headline(metric, "10000:mean_test_accuracy", f"Downstream {short} accuracy @10k"),
        Headline(metric, "sample_efficiency", f"Downstream {short} sample efficiency"),
    )


HEADLINES: dict[str, tuple[Headline, ...]] = {
    "beta_vae": (Headline("beta_vae", "eval_accuracy", "BetaVAE score"),),
    "factor_vae": (Headline("factor_vae", "eval_accuracy", "FactorVAE score"),),
    "mig": (Headline("mig", "discrete_mig", "MIG"),),
    "mig_posterior": (Headline("mig_posterior", "posterior_mig", "MIG (posterior estimator)"),),
    "dci": (
        Headline("dci", "disentanglement", "DCI disentanglement"),
        Headline("dci", "completeness", "DCI completeness"),
        Headline("dci", "informativeness_test", "DCI informativeness"),
    ),
    "sap": (Headline("sap", "SAP_score", "SAP"),),
    "modularity_explicitness": (
        Headline("modularity_explicitness", "modularity_score", "Modularity"),
        Headline("modularity_explicitness", "explicitness_score_test", "Explicitness"),
    ),
    "irs": (Headline("irs", "IRS", "IRS"),),
    "unsupervised": (
        Headline("unsupervised", "gaussian_total_correlation", "Gaussian total correlation", better="lower"),
    ),
    "downstream_logistic_regression": _downstream("downstream_logistic_regression", "LR"),
    "downstream_boosted_trees": _downstream("downstream_boosted_trees", "GBT"),
    "fairness": (Headline("fairness", "mean_fairness:mean_pred:mean_sens", "Unfairness (mean)", better="lower"),),
}

# Display names of the metrics (protocol names in untwine.metrics.PROTOCOLS).
METRIC_LABELS: dict[str, str] = {
    "beta_vae": "BetaVAE score",
    "factor_vae": "FactorVAE score",
    "mig": "MIG",
    "mig_posterior": "MIG (posterior estimator)",
    "dci": "DCI",
    "sap": "SAP score",
    "modularity_explicitness": "Modularity and explicitness",
    "irs": "IRS",
    "unsupervised": "Unsupervised scores",
    "downstream_logistic_regression": "Downstream task (logistic regression)",
    "downstream_boosted_trees": "Downstream task (boosted trees)",
    "fairness": "Fairness",
}

# The columns of a headline table: (network, representation); "untrained" is the same network at initialisation.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("trained", "mean"),
    ("trained", "sampled"),
    ("untrained", "mean"),
    ("untrained", "sampled"),
)


def headline_keys(metric: str) -> tuple[str, ...]:
    """The headline result keys of one metric, e.g. ("disentanglement", "completeness", "informativeness_test")."""
    return tuple(h.key for h in HEADLINES.get(metric, ()))


def result_key(metric: str, key: str, representation: str, network: str = "trained") -> str:
    """The flat results.json key of a score: "eval.mean.mig.discrete_mig", "untrained.eval.sampled.sap.SAP_score"."""
    prefix = "untrained." if network == "untrained" else ""
    return f"{prefix}eval.{representation}.{metric}.{key}"


@dataclass(frozen=True)
class HeadlineRow:
    """One headline score of a run: its definition and its value per column ((network, representation) -> value,
    None where that column was not evaluated or the key is absent, e.g. 10,000-point accuracy under --num-points)."""

    headline: Headline
    values: dict[tuple[str, str], float | None] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.headline.metric

    @property
    def label(self) -> str:
        return self.headline.label


def parse_result_key(name: str) -> tuple[str, str, str, str] | None:
    """ "untrained.eval.mean.mig.discrete_mig" -> ("untrained", "mean", "mig", "discrete_mig"); None for keys that
    are not evaluation results (train.*, reference.*, ...). The inverse of `result_key`."""
    network = "untrained" if name.startswith("untrained.") else "trained"
    parts = name.removeprefix("untrained.").split(".", 3)
    if len(parts) < 4 or parts[0] != "eval":
        return None
    return network, parts[1], parts[2], parts[3]


def evaluated_metrics(results: dict) -> list[str]:
    """Metrics with at least one eval.* or untrained.eval.* key in `results`, in `HEADLINES` order, then others."""
    found = {parsed[2] for parsed in map(parse_result_key, results) if parsed is not None}
    return [m for m in HEADLINES if m in found] + sorted(found - set(HEADLINES))


def headline_table(results: dict, columns: tuple[tuple[str, str], ...] = COLUMNS) -> list[HeadlineRow]:
    """One row per headline score of every metric evaluated in `results` (flat keys as in results.json)."""
    rows = []
    for metric in evaluated_metrics(results):
        for headline in HEADLINES.get(metric, ()):
            values = {}
            for network, representation in columns:
                value = results.get(result_key(metric, headline.key, representation, network))
                values[(network, representation)] = float(value) if isinstance(value, (int, float)) else None
            rows.append(HeadlineRow(headline, values))
    return rows


def used_columns(rows: list[HeadlineRow]) -> list[tuple[str, str]]:
    """The columns that hold at least one value (a table need not show an untrained column nobody evaluated)."""
    return [c for c in COLUMNS if any(row.values.get(c) is not None for row in rows)]
