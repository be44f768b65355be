"""Seed groups: runs that share everything but the seed (one specification's realisations), the unit that UDR and
the training-dynamics score compare within."""

from __future__ import annotations

import json
from collections.abc import Sequence

from untwine.errors import InvalidInputError

# settings that do not change what is trained (where and how it is logged), or that differ between realisations
NOT_SPECIFICATION = (
    "seed",
    "device",
    "data_dir",
    "log_every",
    "checkpoint_every",
    "channels_last",
    "divergence_threshold",
    "trace_every",
    "trace_samples",
)


def specification(config) -> dict:
    """The settings that define a run's specification: its config without the seed and bookkeeping."""
    return {k: v for k, v in config.model_dump().items() if k not in NOT_SPECIFICATION}


def group_labels(specs: dict[str, dict]) -> dict[str, str]:
    """{key: label} for groups given by their specifications: each label names the settings that vary between the
    groups (e.g. "beta=4.0, num_latent=8"), or the method if nothing varies. Where the method varies it comes first,
    and a group's label leaves out settings its method does not have (None) or holds fixed across its groups (e.g.
    "method=factor_vae, dataset=dsprites, gamma=10.0", not every discriminator setting)."""

    def varies(key: str, among) -> bool:
        return len({repr(s.get(key)) for s in among}) > 1

    varying = sorted({k for spec in specs.values() for k in spec if varies(k, specs.values())})
    if "method" in varying:
        varying.remove("method")
        varying.insert(0, "method")

    def label(spec: dict) -> str:
        same_method = [s for s in specs.values() if s.get("method") == spec.get("method")]
        keys = [k for k in varying if k == "method" or (spec.get(k) is not None and varies(k, same_method))]
        return ", ".join(f"{k}={spec.get(k)}" for k in keys)

    return {key: label(spec) if varying else str(spec.get("method")) for key, spec in specs.items()}


def seed_groups(run_dirs: Sequence, min_size: int = 2) -> dict[str, list]:
    """{label: [RunDir, ...]}: the runs grouped by specification, in the order first seen. A label names what
    distinguishes the group from the others (e.g. "beta=4.0"), or the method if there is one group. A group with
    fewer than `min_size` runs is a clear error naming it (before anything is computed)."""
    from untwine.runs import RunDir

    runs = [RunDir(r).require() for r in run_dirs]
    keyed: dict[str, list] = {}
    specs: dict[str, dict] = {}
    for run in runs:
        spec = specification(run.config())
        key = json.dumps(spec, sort_keys=True, default=str)
        keyed.setdefault(key, []).append(run)
        specs[key] = spec
    labels = group_labels(specs)
    groups = {}
    for key, members in keyed.items():
        label = labels[key]
        if len(members) < min_size:
            raise InvalidInputError(
                f"group {label} has {len(members)} run ({members[0].name}); each group needs at least {min_size} "
                "seeds of the same specification"
            )
        groups[label] = members
    return groups
