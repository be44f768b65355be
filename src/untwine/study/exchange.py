"""Moving a study's results in and out: untwine's frame as CSV / Parquet, and disentanglement_lib's aggregated
JSON (spec §7.2-7.3).

dislib-json is what `dlib_aggregate_results` writes: `pandas.DataFrame(list_of_dicts).to_json(path)` in pandas'
default orient="columns" layout ({column: {row index: value}}), one row per model x representation x metric, each
row the merged `results/aggregate/evaluation.json` of one evaluation plus its `path`. Keys are namespaced by the
step's JSON file (`train_config.`, `train_results.`, `postprocess_config.`, `evaluation_config.`,
`evaluation_results.`); config values are gin's text (strings quoted: "'beta_vae'", numbers as text: "4.0").

Export writes, per model: `train_config.*` from the model's TrainConfig in the reference's gin names (model.name,
model.model_num, model.random_seed, dataset.name, the method's hyperparameter bindings, ...); `train_results.*`
from untwine's training summary (the mean of the last logging window: the reference's are a 1,000-batch evaluation
after training); `postprocess_config.postprocess.name`; `evaluation_config.evaluation.name` (the metric config, as
dlib_reproduce binds it) with the sample sizes used; `evaluation_results.*` from the `reference.*` keys of
results.json (untwine keys whose meaning differs from the reference's are not among them).
Import maps each row back: `reference.<rep>.<metric config>.evaluation_results.<key>` and, for metrics untwine
has, `eval.<rep>.<metric>.<key>`, so every analysis runs on disentanglement_lib's results.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import uuid
from pathlib import Path

from untwine.config import METHOD_ALIASES, TrainConfig
from untwine.errors import InvalidInputError
from untwine.metrics import NOT_REFERENCE_KEYS, PROTOCOLS, REFERENCE_NAMES
from untwine.study import grid as grids
from untwine.study.definition import config_hash, seed_group
from untwine.study.store import MODEL_COLUMNS
from untwine.study.studydir import StudyDir

FORMATS = ("csv", "parquet", "dislib-json")

# untwine method -> (the reference's model.name, model.model, {untwine hyperparameter: gin binding}, fixed bindings)
GIN_METHODS = {
    "vae": ("beta_vae", "@vae()", {"beta": "vae.beta"}, {}),
    "beta_vae": ("beta_vae", "@vae()", {"beta": "vae.beta"}, {}),
    "annealed_vae": (
        "annealed_vae",
        "@annealed_vae()",
        {
            "c_max": "annealed_vae.c_max",
            "gamma": "annealed_vae.gamma",
            "iteration_threshold": "annealed_vae.iteration_threshold",
        },
        {},
    ),
    "factor_vae": (
        "factor_vae",
        "@factor_vae()",
        {"gamma": "factor_vae.gamma"},
        {"discriminator.discriminator_fn": "@fc_discriminator"},
    ),
    "dip_vae_i": (
        "dip_vae_i",
        "@dip_vae()",
        {"lambda_od": "dip_vae.lambda_od", "lambda_d_factor": "dip_vae.lambda_d_factor"},
        {"dip_vae.dip_type": "'i'"},
    ),
    "dip_vae_ii": (
        "dip_vae_ii",
        "@dip_vae()",
        {"lambda_od": "dip_vae.lambda_od", "lambda_d_factor": "dip_vae.lambda_d_factor"},
        {"dip_vae.dip_type": "'ii'"},
    ),
    "beta_tcvae": ("beta_tc_vae", "@beta_tc_vae()", {"beta": "beta_tc_vae.beta"}, {}),
}  # fmt: skip
# the reference's metric config -> the gin function it evaluates
EVALUATION_FNS = {
    "beta_vae_sklearn": "beta_vae_sklearn",
    "factor_vae_metric": "factor_vae_score",
    "mig": "mig",
    "dci": "dci",
    "sap_score": "sap_score",
    "modularity_explicitness": "modularity_explicitness",
    "irs": "irs",
    "unsupervised": "unsupervised_metrics",
    "downstream_task_logistic_regression": "downstream_task",
    "downstream_task_boosted_trees": "downstream_task",
    "fairness": "fairness",
}
UNTWINE_METRIC = {reference: name for name, reference in REFERENCE_NAMES.items()}
TRAIN_KEYS = ("loss", "reconstruction_loss", "kl_loss", "regularizer", "elbo", "global_step")


def gin_value(value) -> str:
    """A value as gin's operative config writes it: strings quoted, floats with a decimal point."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value if value.startswith("@") else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(gin_value(v) for v in value) + "]"
    return repr(value)


def parse_gin_value(text):
    """The inverse of `gin_value` for the values a results file holds."""
    if not isinstance(text, str):
        return text
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    if text.startswith("[") and text.endswith("]"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _reference_dataset(dataset: str) -> str:
    return "dsprites_full" if dataset == "dsprites" else dataset


def _untwine_dataset(dataset: str) -> str:
    return "dsprites" if dataset == "dsprites_full" else dataset


def train_config(config: dict, model_num) -> dict:
    """`train_config.*` of one model in the reference's gin names."""
    name, fn, bindings, fixed = GIN_METHODS[config["method"]]
    values = {
        "dataset.name": gin_value(_reference_dataset(config["dataset"])),
        "decoder.decoder_fn": "@deconv_decoder" if config["architecture"] == "conv" else "@fc_decoder",
        "encoder.encoder_fn": "@conv_encoder" if config["architecture"] == "conv" else "@fc_encoder",
        "encoder.num_latent": gin_value(config["latent_dim"]),
        "model.batch_size": gin_value(config["batch_size"]),
        "model.model": fn,
        "model.name": gin_value(name),
        "model.random_seed": gin_value(config["seed"]),
        "model.training_steps": gin_value(config["steps"]),
        "reconstruction_loss.activation": "'logits'",
        "reconstruction_loss.loss_fn": "@bernoulli_loss",
        "vae/AdamOptimizer.beta1": gin_value(config["adam_beta1"]),
        "vae/AdamOptimizer.beta2": gin_value(config["adam_beta2"]),
        "vae/AdamOptimizer.epsilon": gin_value(config["adam_eps"]),
        "vae/AdamOptimizer.learning_rate": gin_value(config["learning_rate"]),
        **fixed,
    }
    if model_num is not None and not (isinstance(model_num, float) and math.isnan(model_num)):
        values["model.model_num"] = gin_value(int(model_num))
    for key, binding in bindings.items():
        if config.get(key) is not None:
            values[binding] = gin_value(config[key])
    if config["method"] == "factor_vae":
        values["discriminator/AdamOptimizer.beta1"] = gin_value(config["discriminator_adam_beta1"])
        values["discriminator/AdamOptimizer.beta2"] = gin_value(config["discriminator_adam_beta2"])
        values["discriminator/AdamOptimizer.learning_rate"] = gin_value(config["discriminator_learning_rate"])
    return {f"train_config.{k}": v for k, v in values.items()}


def _sample_sizes(metric: str, options: dict) -> dict:
    fn = PROTOCOLS[metric]
    sizes = {
        name: options.get(name, param.default)
        for name, param in inspect.signature(fn).parameters.items()
        if name.startswith("num_") and param.default is not inspect.Parameter.empty
    }
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}


def dislib_rows(frame, study_name: str, evaluation: dict | None = None) -> list[dict]:
    """One dict per model x representation x metric config, as disentanglement_lib's aggregation holds them."""
    options = (evaluation or {}).get("options", {})
    rows = []
    for _, model in frame.iterrows():
        if model["status"] != "done":
            continue
        config = json.loads(model["config"])
        base = train_config(config, model.get("model_num"))
        for key in TRAIN_KEYS:
            value = model.get(f"train.{key}")
            if _present(value):
                base[f"train_results.{key}"] = value
        if _present(model.get("train.elapsed_s")):
            base["train_results.elapsed_time"] = model["train.elapsed_s"]
        groups: dict[tuple[str, str], dict] = {}
        for column, value in model.items():
            if not isinstance(column, str) or not column.startswith("reference.") or not _present(value):
                continue
            _, rep, config_name, rest = column.split(".", 3)
            groups.setdefault((rep, config_name), {})[rest.removeprefix("evaluation_results.")] = value
        for (rep, config_name), results in sorted(groups.items()):
            fn = EVALUATION_FNS.get(config_name, config_name)
            row = {
                **base,
                "postprocess_config.postprocess.name": gin_value(rep),
                "postprocess_config.postprocess.postprocess_fn": f"@{rep}_representation",
                "evaluation_config.evaluation.name": gin_value(config_name),
                "evaluation_config.evaluation.evaluation_fn": f"@{fn}",
            }
            metric = UNTWINE_METRIC.get(config_name)
            if metric is not None:
                for name, size in _sample_sizes(metric, options.get(metric, {})).items():
                    row[f"evaluation_config.{fn}.{name}"] = gin_value(size)
            row.update({f"evaluation_results.{k}": v for k, v in results.items()})
            tag = f"{study_name}/{model['model_id']}/{rep}/{config_name}"
            row["evaluation_results.uuid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, tag))
            row["path"] = (
                f"output/{study_name}/{model['model_id']}/metrics/{rep}/{config_name}/results/aggregate/evaluation.json"
            )
            rows.append(row)
    return rows


def _present(value) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# export


def _flat(frame):
    """The frame with every non-scalar value as JSON text (CSV and Parquet hold scalars)."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    return frame


def export_study(study_dir: str | Path, fmt: str, out: str | Path) -> int:
    """Write the study's results to `out` as csv / parquet (the frame: one row per model) or dislib-json (one row
    per model x representation x metric). Returns the number of rows written."""
    import pandas as pd

    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}; choose {', '.join(FORMATS)}")
    study = StudyDir(study_dir)
    with study.store() as store:
        frame = store.frame()
        description = store.meta("study") or {}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        _flat(frame).to_csv(out, index=False)
        return len(frame)
    if fmt == "parquet":
        _flat(frame).to_parquet(out, index=False)
        return len(frame)
    rows = dislib_rows(frame, study.path.name, description.get("evaluation"))
    pd.DataFrame(rows).to_json(out)  # exactly aggregate_results_to_json: pandas' default orient="columns"
    return len(rows)


# ---------------------------------------------------------------------------------------------------------------
# import


def _detect(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "dislib-json"
    if suffix in (".csv", ".parquet"):
        return suffix[1:]
    raise InvalidInputError(f"cannot tell the format of {path.name}; pass --format csv, parquet or dislib-json")


def import_study(path: str | Path, out: str | Path, fmt: str | None = None) -> int:
    """Create the study `out` from a csv / parquet export of untwine or a dislib-json aggregation; returns the
    number of models."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"no file at {path}")
    fmt = fmt or _detect(path)
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}; choose {', '.join(FORMATS)}")
    models, evaluation = _read_dislib(path) if fmt == "dislib-json" else _read_frame(path, fmt)
    if not models:
        raise InvalidInputError(f"{path} holds no models")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    study = {"kind": "imported", "name": path.stem, "spec": {"source": path.name, "sha256": digest}}
    study["evaluation"] = evaluation
    target = StudyDir(out)
    if target.exists():
        raise InvalidInputError(f"{target.path} already holds a study; import into a new directory")
    target.lock()
    try:
        with target.open(study, digest) as store:
            store.register([row for row, _, _ in models])
            for row, status, results in models:
                if status == "done":
                    store.finish(row["model_id"], results, **{k: row.get(k) for k in ("train_s", "eval_s")})
                elif status == "failed":
                    store.fail(row["model_id"], row.get("reason") or "failed")
    finally:
        target.unlock()
    return len(models)


def _read_frame(path: Path, fmt: str):
    import pandas as pd

    try:
        frame = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many kinds for a bad file
        raise InvalidInputError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None
    missing = [c for c in ("model_id", "method", "dataset", "seed", "config", "status") if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"{path} is not an untwine study export (no column {missing[0]})")
    keys = [c for c in frame.columns if c not in MODEL_COLUMNS]
    models = []
    for _, record in frame.iterrows():
        row = {c: _native(record[c]) for c in MODEL_COLUMNS if c in frame.columns and c != "status"}
        row["model_id"] = str(row["model_id"])
        row["run_dir"] = None
        results = {k: _decode(record[k]) for k in keys if _present(record[k])}
        models.append((row, record["status"], results))
    metrics = sorted({k.split(".")[2] for k in keys if k.startswith("eval.") and k.count(".") >= 3})
    reps = sorted({k.split(".")[1] for k in keys if k.startswith("eval.")})
    return models, {"metrics": metrics, "representations": reps, "num_points": None, "options": {}}


def _native(value):
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def _decode(value):
    value = _native(value)
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _read_dislib(path: Path):
    import pandas as pd

    try:  # as load_aggregated_json_results, but without pandas' guessing of dates and types
        frame = pd.read_json(path, orient="columns", dtype=False)
    except ValueError as exc:
        raise InvalidInputError(f"cannot read {path} as disentanglement_lib's aggregated JSON: {exc}") from None
    if "train_config.model.name" not in frame.columns:
        raise InvalidInputError(f"{path} is not disentanglement_lib's aggregated results (no train_config.model.name)")
    models: dict[str, tuple[dict, str, dict]] = {}
    metrics, reps = set(), set()
    for _, record in frame.iterrows():
        values = {k: v for k, v in record.items() if _present(v)}
        train = {
            k[len("train_config.") :]: parse_gin_value(v) for k, v in values.items() if k.startswith("train_config.")
        }
        row = _model_row(train)
        model_id = row["model_id"]
        if model_id not in models:
            results = {}
            for k, v in values.items():
                if k.startswith("train_results.") and k != "train_results.uuid":
                    name = k[len("train_results.") :]
                    results["train.elapsed_s" if name == "elapsed_time" else f"train.{name}"] = v
            models[model_id] = (row, "done", results)
        results = models[model_id][2]
        rep = _row_name(values, "postprocess_config.postprocess.name", -4)
        config_name = _row_name(values, "evaluation_config.evaluation.name", -3)
        reps.add(rep)
        metric = UNTWINE_METRIC.get(config_name)
        if metric:
            metrics.add(metric)
        for k, v in values.items():
            if not k.startswith("evaluation_results.") or k == "evaluation_results.uuid":
                continue
            key = k[len("evaluation_results.") :]
            results[f"reference.{rep}.{config_name}.evaluation_results.{key}"] = v
            if metric and key not in NOT_REFERENCE_KEYS.get(metric, ()):
                results[f"eval.{rep}.{metric}.{'elapsed_s' if key == 'elapsed_time' else key}"] = v
    evaluation = {"metrics": sorted(metrics), "representations": sorted(reps), "num_points": None, "options": {}}
    return list(models.values()), evaluation


def _row_name(values: dict, key: str, path_index: int) -> str:
    """The representation / metric config of a row: from its config, else from its path
    (.../metrics/<rep>/<metric>/results/aggregate/evaluation.json)."""
    if key in values:
        return str(parse_gin_value(values[key]))
    parts = str(values.get("path", "")).split("/")
    if len(parts) >= -path_index:
        return parts[path_index]
    raise InvalidInputError(f"a row has neither {key} nor a path to read it from")


def _model_row(train: dict) -> dict:
    """A `models` row for the model a dislib row's train_config describes."""
    name = str(train.get("model.name", ""))
    method = METHOD_ALIASES.get(name, name)
    if method not in GIN_METHODS:
        raise InvalidInputError(f"unknown model.name {name!r} in the results")
    _, _, bindings, _ = GIN_METHODS[method]
    values = {
        "method": method,
        "dataset": _untwine_dataset(str(train.get("dataset.name", "dsprites_full"))),
        "seed": int(train.get("model.random_seed", 0)),
        **{key: train[binding] for key, binding in bindings.items() if binding in train},
    }
    for key, gin in (
        ("steps", "model.training_steps"),
        ("batch_size", "model.batch_size"),
        ("latent_dim", "encoder.num_latent"),
        ("learning_rate", "vae/AdamOptimizer.learning_rate"),
    ):
        if gin in train:
            values[key] = train[gin]
    if str(train.get("encoder.encoder_fn", "@conv_encoder")) == "@fc_encoder":
        values["architecture"] = "fc"
    try:
        built = TrainConfig.build(**values)
        config, ident, group = built.model_dump(), config_hash(built), seed_group(built)
    except InvalidInputError:
        config, ident = values, hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]
        group = hashlib.sha256(json.dumps({**values, "seed": None}, sort_keys=True).encode()).hexdigest()[:12]
    sweep_name, value, index = _sweep_position(method, values)
    num = train.get("model.model_num")
    model_id = str(int(num)) if isinstance(num, (int, float)) else ident
    spec = {
        "model_id": model_id,
        "model_num": int(num) if isinstance(num, (int, float)) else None,
        "method": method,
        "dataset": values["dataset"],
        "seed": values["seed"],
        "hyperparameter": sweep_name,
        "value": value,
        "value_index": index,
        "seed_group": group,
        "config": json.dumps(config, sort_keys=True),
        "run_dir": None,
    }
    return spec


def _sweep_position(method: str, values: dict) -> tuple[str, float | None, int | None]:
    """The swept hyperparameter of `method` in unsupervised_study_v1, its value and its index there."""
    try:
        sweep = grids.UNSUPERVISED_STUDY_V1.sweep(method if method != "vae" else "beta_vae")
    except InvalidInputError:
        return "", None, None
    value = values.get(sweep.hyperparameter)
    if value is None:
        return sweep.hyperparameter, None, None
    value = float(value)
    index = sweep.values.index(value) if value in sweep.values else None
    return sweep.hyperparameter, value, index


__all__ = ["FORMATS", "export_study", "import_study", "dislib_rows", "gin_value", "parse_gin_value"]
