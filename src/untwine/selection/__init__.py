"""Model selection without labels: UDR (udr.py), the training-dynamics score (dynamics.py), and label noise for
the supervised metrics they are judged against (label_noise.py). Spec: model-selection-methods.md §2-§3."""

from untwine.selection.udr import udr, udr_for_runs  # noqa: F401

__all__ = ["udr", "udr_for_runs"]
