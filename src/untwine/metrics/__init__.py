"""Disentanglement metrics (spec §5): array-level functions and protocol-level evaluations.

Array level: codes [N, d] floats and integer factors [N, K] -> a dict keyed as in the reference.
Protocol level: `PROTOCOLS[name](representation, dataset, generator, **options)` samples from a FactorDataset
with the reference's defaults (spec §5.15). `REFERENCE_NAMES` maps untwine's metric names to the reference's
metric config names (for the disentanglement_lib result format); metrics the reference lacks have none.
"""

import functools

from untwine.metrics import beta_vae_score as _beta_vae_score
from untwine.metrics import dci as _dci
from untwine.metrics import downstream as _downstream
from untwine.metrics import factor_vae_score as _factor_vae_score
from untwine.metrics import fairness as _fairness
from untwine.metrics import irs as _irs
from untwine.metrics import mig as _mig
from untwine.metrics import modularity as _modularity
from untwine.metrics import sap as _sap
from untwine.metrics import unsupervised as _unsupervised
from untwine.metrics.dci import dci
from untwine.metrics.irs import irs
from untwine.metrics.mig import mig
from untwine.metrics.mig_posterior import mig_posterior
from untwine.metrics.modularity import modularity_explicitness
from untwine.metrics.sap import sap
from untwine.metrics.unsupervised import unsupervised

PROTOCOLS = {
    "beta_vae": _beta_vae_score.evaluate,
    "factor_vae": _factor_vae_score.evaluate,
    "mig": _mig.evaluate,
    "mig_posterior": functools.partial(_mig.evaluate, estimator="posterior"),
    "dci": _dci.evaluate,
    "sap": _sap.evaluate,
    "modularity_explicitness": _modularity.evaluate,
    "irs": _irs.evaluate,
    "unsupervised": _unsupervised.evaluate,
    "downstream_logistic_regression": _downstream.evaluate_logistic_regression,
    "downstream_boosted_trees": _downstream.evaluate_boosted_trees,
    "fairness": _fairness.evaluate,
}

REFERENCE_NAMES = {
    "beta_vae": "beta_vae_sklearn",
    "factor_vae": "factor_vae_metric",
    "mig": "mig",
    "dci": "dci",
    "sap": "sap_score",
    "modularity_explicitness": "modularity_explicitness",
    "irs": "irs",
    "unsupervised": "unsupervised",
    "downstream_logistic_regression": "downstream_task_logistic_regression",
    "downstream_boosted_trees": "downstream_task_boosted_trees",
    "fairness": "fairness",
}

# untwine keys whose meaning differs from the reference's key of the same name (documented bugs fixed here), or
# that the reference does not compute: left out of the reference-namespaced results.
NOT_REFERENCE_KEYS = {
    "factor_vae": {"num_active_dims"},
    "irs": {"num_active_dims"},
    "downstream_logistic_regression": {"sample_efficiency"},
    "downstream_boosted_trees": {"sample_efficiency"},
}

__all__ = [
    "NOT_REFERENCE_KEYS",
    "PROTOCOLS",
    "REFERENCE_NAMES",
    "dci",
    "irs",
    "mig",
    "mig_posterior",
    "modularity_explicitness",
    "sap",
    "unsupervised",
]
