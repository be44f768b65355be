"""Model selection without labels: UDR (udr.py), the training-dynamics score (dynamics.py), both within seed groups
(groups.py), and label noise for the supervised metrics they are judged against (label_noise.py).
Spec: model-selection-methods.md §2-§3."""

from untwine.selection.dynamics import dynamics_for_runs, dynamics_score  # noqa: F401
from untwine.selection.groups import seed_groups  # noqa: F401
from untwine.selection.label_noise import NoisyLabels, perturb_factors  # noqa: F401
from untwine.selection.udr import encode_models, udr, udr_for_runs  # noqa: F401

__all__ = [
    "NoisyLabels",
    "dynamics_for_runs",
    "dynamics_score",
    "encode_models",
    "perturb_factors",
    "seed_groups",
    "udr",
    "udr_for_runs",
]
