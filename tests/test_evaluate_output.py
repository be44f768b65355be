"""What `untwine evaluate` prints: the headline table by default, every key with --verbose, JSON with --json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from untwine.cli import main
from untwine.cli.evaluate import _print_results
from untwine.metrics import PROTOCOLS
from untwine.metrics.headline import HEADLINES, result_key

MAX_LINES = 40


def rows_of(label: str, lines: list[str]) -> list[str]:
    """The table rows of a headline label (its label, perhaps the lower-is-better arrow, then values)."""
    return [line for line in lines if re.match(rf"\s*{re.escape(label)}( \u2193)?\s+[-\d\u2014]", line)]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("evaluate") / "run"
    assert main(["train", "--out", str(path), "--steps", "2", "--log-every", "1"]) == 0
    return path


def test_json_writes_only_the_results(run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run), "--metrics", "mig", "--num-points", "200", "--untrained", "--json"]) == 0
    out = capsys.readouterr().out
    results = json.loads(out)  # the whole of stdout is one JSON document
    for prefix in ("", "untrained."):
        for rep in ("mean", "sampled"):
            assert 0.0 <= results[f"{prefix}eval.{rep}.mig.discrete_mig"] <= 1.0
            assert results[f"{prefix}eval.{rep}.mig.elapsed_s"] > 0
    stored = json.loads((run / "results.json").read_text())
    assert all(stored[k] == v for k, v in results.items())


def test_headline_table_by_default_every_key_with_verbose(run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run), "--metrics", "mig", "--num-points", "200", "--representation", "mean"]) == 0
    out = capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    value = f"{results['eval.mean.mig.discrete_mig']:.4f}"
    mig_rows = rows_of("MIG", out.splitlines())
    assert len(mig_rows) == 1 and value in mig_rows[0]
    assert "reference." not in out and "elapsed" not in out
    assert main(["evaluate", str(run), "--metrics", "mig", "--num-points", "200", "--verbose"]) == 0
    verbose = capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    lines = verbose.splitlines()
    for key in (
        "eval.mean.mig.discrete_mig",
        "eval.sampled.mig.elapsed_s",
        "reference.mean.mig.evaluation_results.elapsed_time",
    ):
        assert [line.split() for line in lines if line.startswith(key + " ")] == [[key, f"{results[key]:.4f}"]]


def every_headline_results() -> dict:
    """Results as `--metrics all --untrained` leaves them: every headline key in all four columns, among others."""
    results = {}
    for i, (metric, headlines) in enumerate(HEADLINES.items()):
        for network in ("trained", "untrained"):
            for rep in ("mean", "sampled"):
                for h in headlines:
                    results[result_key(metric, h.key, rep, network)] = 0.5 + i / 100
                results[result_key(metric, "elapsed_s", rep, network)] = 1.0
                results[result_key(metric, "some_other_key", rep, network)] = 0.25
    return results


def test_headline_summary_of_every_metric_fits_a_screen(capsys):
    results = every_headline_results()
    _print_results(results, Path("runs/a"))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) < MAX_LINES, "\n".join(lines)
    text = "\n".join(lines)
    for headlines in HEADLINES.values():
        for h in headlines:
            assert len(rows_of(h.label, lines)) == 1, h.label
    assert "some_other_key" not in text and "0.2500" not in text
    assert max(len(line) for line in lines) <= 80  # no wrapped rows on an 80-column terminal


@pytest.mark.slow
def test_every_metric_end_to_end_summary(run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run), "--metrics", "all", "--num-points", "500", "--untrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) < MAX_LINES, "\n".join(lines)
    results = json.loads((run / "results.json").read_text())
    for metric in PROTOCOLS:
        for h in HEADLINES[metric]:
            row = rows_of(h.label, lines)
            assert len(row) == 1, h.label
            if h.key.startswith("10000:") or h.key == "sample_efficiency":
                assert result_key(metric, h.key, "mean") not in results  # no 10,000-point sample: a dash
                assert row[0].count("\u2014") == 4
            else:
                assert f"{results[result_key(metric, h.key, 'mean')]:.4f}" in row[0]
                assert f"{results[result_key(metric, h.key, 'sampled', 'untrained')]:.4f}" in row[0]
