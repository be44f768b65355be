"""The rPU-VAE paper's comparison (Estermann et al. 2020, Fig. 1, 2 and 4) at two scales, on dSprites:

- PBT-S-VAE (fitness MIG on all labels), 1000-PBT-S-VAE (MIG on 1,000 labels), PBT-U-VAE (UDR among 5 VAEs per
  member), rPU-VAE (leaf runs, surrogate labels, final PBT-S-VAE on them) and random search with PBT-S-VAE's
  compute (the same population, rounds and samples, no exploit), each final model evaluated with MIG and DCI
  disentanglement against the true factors.
- `scale="paper"`: the paper's settings (population 56, 480,000 samples per round, 28 rounds for the supervised
  reference, 17 for the final run, 3 leaf runs): a GPU cluster's job.
- `scale="cpu"`: small populations and short rounds sized for about 3 hours on 2 CPU cores (an estimate from the
  sample counts, about 8.3 million VAE training samples in all, not a measurement): populations 4-8,
  10,000-16,000 samples per round, 8 rounds, MIG fitness on 10,000 labels, one leaf run of 2 levels; evaluation
  MIG on 10,000 points and DCI on 2,000/1,000.

    reproduce_estermann2020("E", scale="cpu", seeds=[0])   # E/<approach>-s<seed>/..., E/table.json

Every part resumes (the PBT and rPU runs do), so the same call continues a killed reproduction.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from untwine.errors import InvalidInputError
from untwine.selection.pbt import PBTSettings, _atomic_json, run_pbt
from untwine.selection.rpu import RPUSettings, final_run, run_rpu

SCALES = ("cpu", "paper")
APPROACHES = ("pbt_s", "pbt_s_1000", "pbt_u", "rpu", "random_search")


def scale_settings(scale: str) -> dict:
    """{approach: PBTSettings | RPUSettings} and the evaluation's sample sizes of one scale."""
    if scale not in SCALES:
        raise InvalidInputError(f"unknown scale {scale!r}; choose cpu or paper")
    if scale == "paper":
        supervised = PBTSettings(fitness="mig", population=56, generations=28, init_population_factor=2)
        udr = PBTSettings(fitness="udr", population=56, generations=30, stop="converge")
        rpu = RPUSettings()
        evaluation = {"mig": {"num_train": 50_000}, "dci": {"num_train": 10_000, "num_test": 5_000}}
    else:
        supervised = PBTSettings(fitness="mig:10000", population=8, generations=8, interval_samples=16_000)
        udr = PBTSettings(fitness="udr", population=4, generations=8, interval_samples=10_000, stop="converge")
        rpu = RPUSettings(
            population=4,
            generations=8,
            interval_samples=10_000,
            leaf_runs=1,
            levels=2,
            final_population=8,
            final_generations=6,
            final_interval_samples=16_000,
            final_points=10_000,
        )
        evaluation = {"mig": {"num_train": 10_000}, "dci": {"num_train": 2_000, "num_test": 1_000}}
    return {
        "pbt_s": supervised,
        "pbt_s_1000": replace(supervised, fitness="mig:1000"),
        "pbt_u": udr,
        "rpu": rpu,
        "random_search": replace(supervised, exploit=False, init_population_factor=1),
        "evaluation": evaluation,
    }


def reproduce_estermann2020(
    out: str | Path,
    scale: str = "cpu",
    seeds=(0,),
    approaches=APPROACHES,
    address: str | None = None,
    num_cpus: int | None = None,
    progress=None,
) -> list[dict]:
    """Run every approach for every seed into `out`, evaluate each final model (MIG, DCI disentanglement), and
    write `out/table.json`; returns its rows (approach, seed, mig, dci, fitness, wall_s). `progress(text)` is told
    what starts."""
    from untwine.evaluation.evaluate import evaluate_run

    settings = scale_settings(scale)
    unknown = sorted(set(approaches) - set(APPROACHES))
    if unknown:
        raise InvalidInputError(f"unknown approach {unknown[0]!r}; choose from {', '.join(APPROACHES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        for name in approaches:
            where = out / f"{name}-s{seed}"
            if progress:
                progress(f"{name} seed {seed} -> {where}")
            if name == "rpu":
                summary = run_rpu(where, replace(settings[name], seed=seed), address=address, num_cpus=num_cpus)
                run, wall = final_run(where), summary.get("wall_s")
                fitness = (summary.get("final") or {}).get("best", {}).get("fitness")
            else:
                result = run_pbt(where, replace(settings[name], seed=seed), address=address, num_cpus=num_cpus)
                run, wall, fitness = where / "final", result.wall_s, result.best.get("fitness")
            row = {"approach": name, "seed": seed, "fitness": fitness, "wall_s": wall, "mig": None, "dci": None}
            if run is not None:
                values = evaluate_run(run, ["mig", "dci"], representations=("mean",), options=settings["evaluation"])
                row["mig"] = next((v for k, v in values.items() if k.endswith("mig.discrete_mig")), None)
                row["dci"] = next((v for k, v in values.items() if k.endswith("dci.disentanglement")), None)
            rows.append(row)
            _atomic_json(out / "table.json", {"scale": scale, "rows": rows})
    return rows


def table_markdown(rows: list[dict]) -> str:
    """The reproduction's table (MIG and DCI per approach and seed) as Markdown."""
    lines = ["| approach | seed | MIG | DCI disentanglement | fitness | wall s |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["approach"], r["seed"], r["mig"], r["dci"], r["fitness"], r["wall_s"]]
        lines.append("| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)


def load_table(out: str | Path) -> list[dict]:
    return json.loads((Path(out) / "table.json").read_text())["rows"]
