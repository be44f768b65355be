"""The matrices behind a run's scores, stored beside results.json (which holds only scalars).

    <run>/eval/<network>/<representation>/<metric>.npz     network: trained or untrained

Each file holds the arrays the metric's scores were computed from (`Scores.arrays`: MIG's and modularity's code x
factor mutual-information matrix "mutual_info" [d, K], DCI's importance matrix "importance" [d, K], ...) and the
data set's "factor_names" [K]. The run report draws its heatmaps from these files, so a picture shows exactly the
matrix the metric used; a run evaluated before they were stored simply has none (`read_arrays` returns None).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from untwine.errors import InvalidInputError

NETWORKS = ("trained", "untrained")


def arrays_path(run_dir, metric: str, representation: str, network: str = "trained") -> Path:
    """<run>/eval/<network>/<representation>/<metric>.npz."""
    if network not in NETWORKS:
        raise InvalidInputError(f"unknown network {network!r}; choose trained or untrained")
    return Path(getattr(run_dir, "path", run_dir)) / "eval" / network / representation / f"{metric}.npz"


def write_arrays(run_dir, arrays: dict, factor_names, network: str = "trained") -> list[Path]:
    """Store `arrays` keyed "eval.<representation>.<metric>.<name>" (as `evaluate_model` returns them), one file per
    (representation, metric), each atomically (a reader never sees half a file). Returns the paths written."""
    groups: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        _, representation, metric, name = key.split(".", 3)
        groups.setdefault((representation, metric), {})[name] = np.asarray(value)
    paths = []
    for (representation, metric), group in groups.items():
        path = arrays_path(run_dir, metric, representation, network)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as file:
            np.savez(file, factor_names=np.asarray([str(n) for n in factor_names]), **group)
        os.replace(partial, path)
        paths.append(path)
    return paths


def read_arrays(run_dir, metric: str, representation: str, network: str = "trained") -> dict[str, np.ndarray] | None:
    """The stored arrays of one evaluation, or None if the run has none (not evaluated, or evaluated by an untwine
    that did not store them). An unreadable file raises InvalidInputError."""
    path = arrays_path(run_dir, metric, representation, network)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"corrupt evaluation arrays {path}: {exc}") from None
