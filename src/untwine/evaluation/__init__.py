"""Representation functions and the evaluation of metrics on models and runs."""

from untwine.evaluation.code_cache import CodeCache
from untwine.evaluation.evaluate import evaluate_model, evaluate_run, metric_names
from untwine.evaluation.representation import (
    encode_factors,
    mean_representation,
    representation,
    sample_codes,
    sampled_representation,
)

__all__ = [
    "CodeCache",
    "encode_factors",
    "evaluate_model",
    "evaluate_run",
    "mean_representation",
    "metric_names",
    "representation",
    "sample_codes",
    "sampled_representation",
]
