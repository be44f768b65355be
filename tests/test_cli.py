import json

import pytest

from untwine.cli import main
from untwine.evaluation import evaluate_model
from untwine.runs import RunDir


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--out", "x", "--steps", "abc"], "--steps"),
        (["train", "--out", "x", "--method", "nope"], "unknown method 'nope'"),
        (["train", "--out", "x", "--dataset", "nope"], "unknown data set 'nope'"),
        (["train", "--out", "x", "--beta", "-1"], "beta"),
        (["train"], "--out"),
        (["evaluate", "no/such/run"], "not a run directory"),
        (["report", "no/such/run"], "not a run directory"),
        (["datasets", "show", "nope"], "unknown data set"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_arguments_give_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1, f"one line, got: {err!r}"
    assert "Traceback" not in err


def test_every_command_has_help(capsys):
    for argv in (
        ["--help"],
        ["demo", "--help"],
        ["train", "--help"],
        ["evaluate", "--help"],
        ["report", "--help"],
        ["datasets", "--help"],
        ["datasets", "list", "--help"],
        ["datasets", "show", "--help"],
        ["datasets", "render", "--help"],
    ):
        assert main(argv) == 0
        assert "Usage" in capsys.readouterr().out


def test_datasets_list_and_show(capsys, tmp_path):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "dsprites" in out and "rendered" in out and "smallnorb" in out
    sheet = tmp_path / "sheet.png"
    assert main(["datasets", "show", "dsprites", "-o", str(sheet)]) == 0
    from PIL import Image

    with Image.open(sheet) as image:
        assert image.width > 16 * 64 and image.height >= 5 * 64  # 5 factor rows of up to 16 images


def test_train_evaluate_report(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "6", "--log-every", "2", "--beta", "4"]) == 0
    assert main(["train", "--out", str(run), "--steps", "6"]) == 2  # refuses to overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--num-points", "500", "--untrained"]) == 0
    results = json.loads((run / "results.json").read_text())
    dataset = RunDir(run).load_dataset()
    for prefix, which in (("", "final"), ("untrained.", "untrained")):  # as a direct call on the stored network
        direct = evaluate_model(RunDir(run).load_model(which), dataset, ["mig"], options={"mig": {"num_train": 500}})
        for rep in ("mean", "sampled"):
            assert results[f"{prefix}eval.{rep}.mig.discrete_mig"] == direct[f"eval.{rep}.mig.discrete_mig"]
    assert results["eval.mean.mig.discrete_mig"] != results["untrained.eval.mean.mig.discrete_mig"]
    assert main(["evaluate", str(run), "--metrics", "nope"]) == 2
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "data:image/gif;base64" in html and "discrete_mig" in html
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--metrics",
                "dci",
                "--num-points",
                "200",
                "--representation",
                "mean",
                "--option",
                "dci.importance=lightgbm",
                "--option",
                "dci.n_jobs=1",
            ]
        )
        == 0
    )
    results = json.loads((run / "results.json").read_text())
    # the stored numbers are those of a direct call with the options (--num-points 200 -> 200 train, 100 test)
    model = RunDir(run).load_model()
    options = {"dci": {"num_train": 200, "num_test": 100, "importance": "lightgbm", "n_jobs": 1}}
    direct = evaluate_model(model, dataset, ["dci"], ["mean"], options=options)
    for key in ("disentanglement", "completeness", "informativeness_train", "informativeness_test"):
        assert results[f"eval.mean.dci.{key}"] == direct[f"eval.mean.dci.{key}"], key
    # and an option changes the number: MIG with 5 bins instead of 20
    assert (
        main(["evaluate", str(run), "--num-points", "500", "--representation", "mean", "--option", "mig.num_bins=5"])
        == 0
    )
    five_bins = json.loads((run / "results.json").read_text())["eval.mean.mig.discrete_mig"]
    options = {"mig": {"num_train": 500}}
    twenty = evaluate_model(model, dataset, ["mig"], ["mean"], options=options)["eval.mean.mig.discrete_mig"]
    options["mig"]["num_bins"] = 5
    assert five_bins == evaluate_model(model, dataset, ["mig"], ["mean"], options=options)["eval.mean.mig.discrete_mig"]
    assert five_bins != twenty
    for bad, message in (
        ("dci.importance", "metric.setting=value"),
        ("mig.importance=gbt", "mig has no setting"),
        ("sap.x=1", "not among those evaluated"),
    ):
        assert main(["evaluate", str(run), "--metrics", "dci,mig", "--option", bad]) == 2
        assert message in capsys.readouterr().err


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "20", "--eval-points", "1000"]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "untrained" in printed
    results = json.loads((out / "results.json").read_text())
    assert {"eval.mean.mig.discrete_mig", "untrained.eval.mean.mig.discrete_mig", "train.global_step"} <= set(results)
    assert (out / "report.html").exists() and (out / "figures" / "traversals.gif").exists()


def test_datasets_list_json_and_unwrapped_tables(capsys, tmp_path):
    from untwine.data.registry import dataset_names

    assert main(["datasets", "list", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in records] == dataset_names()
    dsprites = records[0]
    assert dsprites["factor_sizes"] == [3, 6, 40, 32, 32] and dsprites["observation_shape"] == [1, 64, 64]
    assert dsprites["available"] is True and records[[r["name"] for r in records].index("cars3d")]["available"] is False
    # piped (not a terminal): one line per row, no name or path broken across lines
    assert main(["datasets", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for record in records:
        assert any(f" {record['name']} " in line for line in lines), record["name"]
        for file in record["files"]:
            assert any(file in line for line in lines), file


def test_datasets_list_checks_files_as_training_does(capsys, tmp_path):
    (tmp_path / "cars").mkdir()
    (tmp_path / "cars" / "car.mat").write_bytes(b"not a mat file")
    assert main(["datasets", "list", "--json", "--data-dir", str(tmp_path)]) == 0
    cars = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["cars3d"]
    assert cars["available"] is False and "is not a readable .mat file" in cars["status"]
    assert main(["train", "--out", str(tmp_path / "r"), "--dataset", "cars3d", "--data-dir", str(tmp_path)]) == 2
    assert cars["status"].removeprefix("no: ") in capsys.readouterr().err  # the same message


def test_a_failing_metric_does_not_lose_the_others(tmp_path, capsys, dsprites):
    from untwine.config import TrainConfig
    from untwine.training import Trainer

    run = tmp_path / "run"
    Trainer(TrainConfig(steps=2, batch_size=4), run, dataset=dsprites).train()
    argv = ["evaluate", str(run), "--metrics", "mig,modularity_explicitness,irs", "--num-points", "100"]
    # with 100 points, modularity's 50 test points hold orientations its 100 training points lack: it fails
    assert main([*argv, "--representation", "mean"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: modularity_explicitness: the test set has factor value")
    results = json.loads((run / "results.json").read_text())
    assert 0.0 <= results["eval.mean.mig.discrete_mig"] <= 1.0 and "eval.mean.irs.IRS" in results
    assert not [k for k in results if "modularity" in k]
