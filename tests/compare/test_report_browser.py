"""The HTML report opened in a real browser: Debian's headless Chromium, driven through
Selenium and Debian's chromedriver (`make test` installs both where apt-get can)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from labrun.cli.compare import parse
from labrun.compare.report import compare

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SOURCE = "https://cogcomp.seas.upenn.edu/Data/QA/QC/train_5500.label"
SHA = "9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).is_file(), f"{path} missing: apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def four_runs(tmp_path: Path) -> str:
    """Four runs as `labrun train` leaves them: ~30 params (data sources with URLs and sha256s
    among them), one point of each metric, two seeds of two hidden sizes."""
    uri = f"sqlite:///{tmp_path}/report.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("trec_lstm", artifact_location=(tmp_path / "a").as_uri())
    for i, (hidden, seed) in enumerate([(64, 0), (64, 1), (256, 0), (256, 1)]):
        run = client.create_run(exp, run_name=f"trec_lstm-s{seed}-h{hidden}")
        params = {f"model.extra_{k}": "same" for k in range(24)}
        params |= {
            "model.hidden_size": str(hidden),
            "seed": str(seed),
            "objective.metric": "val/acc",
            "data.sources.0.url": f"{SOURCE}?v={i}",
            "data.sources.0.sha256": SHA[i:] + SHA[:i],
        }
        client.log_batch(
            run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()]
        )
        acc = 0.80 + 0.05 * (hidden == 256) + 0.01 * seed
        for name, value in {"val/acc": acc, "test/acc": acc - 0.01, "test/f1": acc - 0.1}.items():
            client.log_metric(run.info.run_id, name, value, step=7)
        client.set_terminated(run.info.run_id)
    return uri


def test_the_report_opens_in_chromium_with_its_tables_and_plots_visible(
    tmp_path: Path, browser
) -> None:
    from PIL import Image

    uri = four_runs(tmp_path)
    out = tmp_path / "report"
    args = ["--tracking-uri", uri, "--experiment", "trec_lstm", "--format", "html", "-o", str(out)]
    compare(parse([*args, "--group-by", "model.hidden_size", "--plot", "curves"]))
    browser.get((out / "compare.html").as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    page = browser.execute_script(
        """
        const tables = [...document.querySelectorAll('table')].map(t => ({
            top: t.getBoundingClientRect().top,
            height: t.offsetHeight,
            header: [...t.rows[0].cells].map(c => c.textContent),
            first: [...t.rows[1].cells].map(c => c.textContent),
        }));
        const images = [...document.images].map(i => ({
            alt: i.alt, width: i.naturalWidth, shown: i.getBoundingClientRect().width,
        }));
        const long = [...document.querySelectorAll('td span[title]')].map(s => s.title);
        return {tables, images, long, scroll: document.documentElement.scrollWidth,
                inner: window.innerWidth};
        """
    )
    assert page["scroll"] <= page["inner"], page  # the page never scrolls sideways
    runs, differs, *pooled = page["tables"]
    assert all(t["height"] > 0 for t in page["tables"])
    assert runs["header"] == ["run", "status", "val/acc", "test/acc", "test/f1"]  # first
    assert runs["first"][0] == "trec_lstm-s1-h256"  # the best objective first
    assert runs["top"] < differs["top"] < pooled[0]["top"]
    assert differs["header"][0] == "run" and "model.hidden_size" in differs["header"]
    assert not any(h.startswith("model.extra_") for h in differs["header"])  # the same in all
    assert f"{SOURCE}?v=3" in page["long"] and SHA in page["long"]  # whole on hover
    assert all(len(cell) <= 28 for t in page["tables"] for cell in t["first"])  # shortened
    shown = {i["alt"]: i for i in page["images"]}
    assert {"curves", "pooled_curves"} <= set(shown)
    assert all(i["width"] > 300 and 0 < i["shown"] <= page["inner"] for i in shown.values())

    browser.execute_script("document.images[0].scrollIntoView()")
    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    assert shot.size[0] >= 1000
    pixels = list(shot.resize((320, 225)).getdata())
    blue = sum(1 for r, g, b in pixels if b > 150 and r < 100)  # matplotlib's first colour
    drawn = sum(1 for p in pixels if p != (255, 255, 255))
    assert blue > 0 and drawn > len(pixels) * 0.02, (blue, drawn)
