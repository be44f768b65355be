"""Open a generated report.html in headless Chromium (Debian's /usr/bin/chromium + chromedriver, via Selenium).

Skipped when Chromium, chromedriver or Selenium is missing, unless UNTWINE_REQUIRE_BROWSER=1 (then it fails).
Selenium Manager never runs: the driver path is given explicitly and SE_OFFLINE=true.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from untwine.config import TrainConfig
from untwine.data import StoredDataset
from untwine.evaluation.arrays import write_arrays
from untwine.nn import GaussianVAE
from untwine.runs import RunDir
from untwine.training.checkpoint import save_checkpoint
from untwine.viz import write_figures, write_report

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
RUN_NAME = "browser-run"
# training curves, reconstructions, samples, traversal grid, animated traversal; mutual-information and DCI
# heatmaps; downstream accuracy
NUM_IMAGES = 8


def _unavailable(reason: str) -> None:
    if os.environ.get("UNTWINE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"UNTWINE_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def _make_report(path: Path) -> Path:
    """A finished run by hand (config, final checkpoint, log, results) and its report."""
    model = GaussianVAE((1, 64, 64), 10, generator=torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        model.decoder.deconv[-1].weight.mul_(300.0)  # make the untrained images vary with z
    g = torch.Generator().manual_seed(0)
    storage = (torch.rand(12, 1, 64, 64, generator=g) > 0.8).to(torch.uint8) * 255
    dataset = StoredDataset("tiny", storage, (3, 4), ("a", "b"), (1, 64, 64))
    run = RunDir(path)
    run.path.mkdir(parents=True)
    TrainConfig(steps=300, log_every=100).write(run.config_path)
    save_checkpoint(run.checkpoints_dir / "final", model, {}, {}, 300)
    log = [
        {
            "step": s,
            "loss": 300 / s,
            "reconstruction_loss": 250 / s,
            "kl_loss": 3.0,
            "regularizer": 3.0,
            "elbo": -280 / s,
        }
        for s in (100, 200, 300)
    ]
    run.log_path.write_text("".join(json.dumps(r) + "\n" for r in log))
    results = {
        "train.steps": 300,
        "eval.mean.mig.discrete_mig": 0.2134,
        "untrained.eval.mean.mig.discrete_mig": 0.03125,
        "eval.mean.mig.elapsed_s": 1.5,
        "eval.mean.dci.disentanglement": 0.4567,
    }
    for size in (10, 100):
        for k in range(2):
            results[f"eval.mean.downstream_logistic_regression.{size}:test_accuracy_factor_{k}"] = 0.3 + size / 200
    run.results_path.write_text(json.dumps(results))
    importance = np.full((10, 2), 0.05)
    importance[0, 0] = importance[1, 1] = 0.55  # columns sum to 1, as a GBT's importances
    write_arrays(
        run,
        {
            "eval.mean.mig.mutual_info": np.linspace(0, 1, 20).reshape(10, 2),
            "eval.mean.mig.factor_entropy": np.array([1.1, 1.4]),
            "eval.mean.dci.importance": importance,
        },
        dataset.factor_names,
    )
    write_figures(run, model=model, dataset=dataset)
    return write_report(run)


@pytest.fixture()
def driver(tmp_path, monkeypatch):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (path.is_file() and os.access(path, os.X_OK)):
            _unavailable(f"{path} is missing (apt-get install chromium chromium-driver)")
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_report_renders_in_chromium(tmp_path, driver):
    report = _make_report(tmp_path / RUN_NAME)
    driver.get(report.resolve().as_uri())

    assert driver.title == f"untwine report \u2014 {RUN_NAME}"
    assert driver.execute_script("return document.readyState") == "complete"
    headline = driver.find_element("id", "headline")
    assert "MIG" in headline.text and "0.213" in headline.text
    assert headline.location["y"] < 400  # the headline table is what a reader sees first
    assert driver.execute_script("return document.querySelector('main section').id") == "headline"
    details = driver.find_element("id", "details-mig")
    assert (
        not details.get_property("open")
        and not driver.find_element("css selector", "#details-mig table").is_displayed()
    )
    details.find_element("tag name", "summary").click()
    assert details.get_property("open") and driver.find_element("css selector", "#details-mig table").is_displayed()
    assert driver.find_element("css selector", "table.matrix[data-matrix=mutual_info]").get_attribute("data-matrix")

    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []

    images = driver.execute_script(
        "return Array.from(document.images).map(i => "
        "({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight, src: i.src.slice(0, 22)}))"
    )
    assert len(images) == NUM_IMAGES
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
        assert image["src"].startswith("data:image/"), image
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith("data:") for name in fetched), fetched  # nothing from the network or disk

    shot = tmp_path / "report.png"
    assert driver.save_screenshot(str(shot))
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.width >= 1000 and image.height >= 1000
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # text, tables and figures, not a blank page


# --- the PBT and rPU-VAE reports (viz/pbt_report.py), from tiny runs made in process (tests/pbt_runs.py) ------------


def _open_report(driver, page: Path, title: str, sections: list[str]) -> list[dict]:
    """Load a report, check it is complete, self-contained and error-free, and return its images."""
    driver.get(page.resolve().as_uri())
    assert driver.title == title
    assert driver.execute_script("return document.readyState") == "complete"
    shown = driver.execute_script("return Array.from(document.querySelectorAll('main section')).map(s => s.id)")
    for section in sections:
        assert section in shown, (section, shown)
        assert driver.find_element("id", section).is_displayed()
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith("data:") for name in fetched), fetched
    images = driver.execute_script(
        "return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, "
        "height: i.naturalHeight, shown: i.getBoundingClientRect().width, src: i.src.slice(0, 22)}))"
    )
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0 and image["shown"] > 0, image
        assert image["src"].startswith("data:image/"), image
    return images


def _table_rows(driver, section: str) -> list[list[str]]:
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('#{section} > table tr')).map("
        "r => Array.from(r.cells).map(c => c.innerText.trim()))"
    )


def test_pbt_report_renders_in_chromium(tmp_path, driver):
    from pbt_runs import exported_and_evaluated

    from untwine.selection.pbt import load_records
    from untwine.viz.pbt_report import write_pbt_report

    out = tmp_path / "pbt-run"
    results = exported_and_evaluated(out)
    page = write_pbt_report(out)
    sections = ["population", "generations", "export", "headline", "latents", "traversals", "details"]
    images = _open_report(driver, page, "untwine PBT report \u2014 pbt-run", sections)
    # the population figure, the two heatmaps (mutual information, DCI importance) and the traversals
    assert [i["alt"] for i in images].count("Latent traversals") == 1 and len(images) == 4
    rows = _table_rows(driver, "generations")
    assert rows[0][:3] == ["gen", "members", "best"] and "wall s" in rows[0] and "CPU s" in rows[0]
    assert [r[0] for r in rows[1:]] == ["0", "1"]
    stored = load_records(out).query("key == 'generation'").value.tolist()
    cpu = [float(r[rows[0].index("CPU s")]) for r in rows[1:]]
    assert cpu == pytest.approx([g["cpu_s"] for g in stored], rel=1e-3)
    headline = driver.find_element("id", "headline").text
    assert "MIG" in headline and f"{results['eval.mean.mig.discrete_mig']:.3f}" in headline
    assert "fitness re-scored at export" in driver.find_element("id", "export").text
    shot = tmp_path / "pbt-report.png"
    assert driver.save_screenshot(str(shot))
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50


def test_rpu_report_renders_in_chromium(tmp_path, driver):
    from pbt_runs import SMALL_EVALUATION, stored_rpu

    from untwine.selection.pbt import evaluate_final
    from untwine.viz.pbt_report import write_rpu_report

    root = tmp_path / "rpu-run"
    stored_rpu(root)
    evaluate_final(root / "final", SMALL_EVALUATION)
    page = write_rpu_report(root)
    sections = ["levels", "level-models", "pbt-runs", "final-population", "headline", "traversals"]
    images = _open_report(driver, page, "untwine rPU-VAE report \u2014 rpu-run", sections)
    alts = [i["alt"] for i in images]
    assert "x-model (level 0)" in alts and "leaf run 0, level 1" in alts and "Latent traversals" in alts
    levels = _table_rows(driver, "levels")
    fixed, values = levels[0].index("true factors held fixed"), levels[0].index("values per true factor")
    assert [(r[fixed], r[values]) for r in levels[1:]] == [("-", "a 3, b 20"), ("a", "a 1, b 20")]
    runs = _table_rows(driver, "pbt-runs")
    assert [r[0] for r in runs[1:]] == ["x-run", "leaf-0/level-1", "final"]
