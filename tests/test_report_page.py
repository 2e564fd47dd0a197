"""`swinseg report`: the review page's content, its escaping, and its behaviour in a real (headless) Chromium.

The browser tests need Chromium and chromedriver (Debian: apt-get install chromium chromium-driver) and
selenium; without them they fail, unless SWINSEG_SKIP_BROWSER=1 asks to skip them (reported as skipped).
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from swinseg import metrics
from swinseg import report_page as rp
from swinseg.cli import app
from swinseg.errors import SwinsegError
from swinseg.io import Volume, read_volume, write_volume

SHAPE = (6, 24, 20)
SPACING = (3.0, 1.0, 1.5)
XSS = "<img src=x onerror=alert(1)>"
runner = CliRunner()


def _write(path: Path, array: np.ndarray) -> Path:
    like = Volume(np.zeros(SHAPE, np.int16), SPACING, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_volume(path, array, like)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    """Three cases: `good` (QC ok), `bad` (QC fail, organ 2 missing) and one named like an HTML injection
    (no QC block); scans, masks with statistics files, references."""
    root = tmp_path_factory.mktemp("review")
    rng = np.random.default_rng(0)
    for i, name in enumerate(("good", "bad", XSS)):
        ref = np.zeros(SHAPE, np.uint8)
        ref[1:5, 3:12 + i, 2:10] = 1
        ref[2:4, 15:20, 12:17] = 2
        mask = ref.copy()
        if name == "bad":
            mask[mask == 2] = 0
        scan = (rng.normal(40, 10, SHAPE) - 1000 * (ref == 0) * (np.indices(SHAPE)[2] < 2)).astype(np.int16)
        _write(root / "scans" / f"{name}_0000.nii.gz", scan)
        _write(root / "masks" / f"{name}.nii.gz", mask)
        _write(root / "refs" / f"{name}.nii.gz", ref)
    for name, verdict, score, reasons in (("good", "ok", 0.95, []), ("bad", "fail", 0.1, ["class 2 missing",
                                                                                         "<b>tiny</b> liver"])):
        statistics = {"case": name, "classes": [{"label": 1, "name": "liver", "voxels": 1}],
                      "qc": {"verdict": verdict, "score": score, "reasons": reasons}}
        (root / "masks" / f"{name}_statistics.json").write_text(json.dumps(statistics), encoding="utf-8")
    (root / "masks" / "bad_preview.png").write_bytes(b"not a mask")  # predict's side files are not masks
    return {"root": root, "scans": root / "scans", "masks": root / "masks", "refs": root / "refs"}


def _decode(uri: str) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    kind, payload = re.fullmatch(r"data:image/(png|jpeg);base64,(.+)", uri).groups()
    return kind, Image.open(io.BytesIO(base64.b64decode(payload))).size


def test_cases_volumes_scores_order_and_names(cohort: dict[str, Path]) -> None:
    cases, names = rp.build_review(cohort["masks"], images=cohort["scans"], reference=cohort["refs"],
                                   class_names={2: "kidney"}, max_slices=4)
    assert [case.name for case in cases] == ["bad", "good", XSS]  # QC fail first, then ok, then no QC
    assert [case.flagged for case in cases] == [True, False, False]
    assert names == {1: "liver", 2: "kidney"}  # 1 from the statistics files, 2 given
    bad, good, xss = cases
    mask = read_volume(cohort["masks"] / "good.nii.gz")
    voxel_ml = np.prod(SPACING) / 1000
    assert good.volumes_ml == {1: pytest.approx(np.sum(mask.array == 1) * voxel_ml),
                               2: pytest.approx(np.sum(mask.array == 2) * voxel_ml)}
    assert 2 not in bad.volumes_ml and bad.qc["reasons"][0] == "class 2 missing"
    assert bad.scores[2]["dice"] == 0.0 and good.scores[1]["dice"] == 1.0
    ref = read_volume(cohort["refs"] / "bad.nii.gz").array
    pred = read_volume(cohort["masks"] / "bad.nii.gz").array
    assert bad.scores[1]["hd95"] == metrics.hd95(pred == 1, ref == 1, SPACING)
    assert xss.qc is None and xss.scan == cohort["scans"] / f"{XSS}_0000.nii.gz"
    assert [row["name"] for row in xss.statistics] == ["liver", "kidney"]  # computed on the scan: no JSON
    assert len(good.slices) == 4 and len(good.mask_images) == len(good.scan_images) == 4  # 6 slices capped at 4
    assert _decode(good.mask_images[0]) == ("png", (24, 19))  # 20 x 1.5 mm wide, 24 x 1 mm high; 24 px long
    assert _decode(good.scan_images[0]) == ("jpeg", (24, 19))
    assert rp.slice_size((512, 512), (0.7, 0.7)) == (rp.SLICE_PX, rp.SLICE_PX)  # large slices shrink
    assert rp.slice_size((100, 400), (2.0, 0.5)) == (rp.SLICE_PX, rp.SLICE_PX)  # at their physical aspect
    assert rp.slice_size((300, 200), (0.5, 0.5)) == (rp.SLICE_PX, round(rp.SLICE_PX * 2 / 3))


def test_a_label_only_in_the_references_gets_its_columns(cohort: dict[str, Path], tmp_path: Path) -> None:
    shutil.copy(cohort["masks"] / "bad.nii.gz", tmp_path / "bad.nii.gz")  # organ 2 missing, no statistics file
    cases, names = rp.build_review(tmp_path / "bad.nii.gz", reference=cohort["refs"] / "bad.nii.gz")
    assert names == {1: "label_1", 2: "label_2"}
    assert cases[0].scores[2]["dice"] == 0.0 and cases[0].volumes_ml.keys() == {1}
    assert "label_2 Dice" in rp.cohort_table(cases, names)


def test_page_escapes_file_text_and_needs_no_network(cohort: dict[str, Path], tmp_path: Path) -> None:
    path, _ = rp.write_review(cohort["masks"], tmp_path / "review.html", images=cohort["scans"])
    page = path.read_text(encoding="utf-8")
    assert XSS not in page and "<b>tiny" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the table cell, as text
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in page  # the viewer's data
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page).group(1))
    assert data["cases"][2]["name"] == XSS and data["classes"][0]["color"] == "#e64b3c"  # overlay's label 1


def test_bad_inputs_are_named(cohort: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SwinsegError, match="name it"):
        rp.write_review(cohort["masks"], tmp_path / "review.txt")
    broken = tmp_path / "masks"
    broken.mkdir()
    shutil.copy(cohort["masks"] / "good.nii.gz", broken / "good.nii.gz")
    (broken / "good_statistics.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SwinsegError, match="good_statistics.json: not a readable statistics file"):
        rp.build_review(broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SwinsegError, match="empty: no masks found"):
        rp.build_review(tmp_path / "empty")


def test_cli_writes_the_page(cohort: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "review.html"
    result = runner.invoke(app, ["report", str(cohort["masks"]), "-o", str(out), "--reference", str(cohort["refs"]),
                                 "--labels", "1=liver,2=spleen"])
    assert result.exit_code == 0, result.output
    assert "review of 3 cases (1 flagged by QC)" in result.stdout
    page = out.read_text(encoding="utf-8")
    assert "spleen Dice" in page and "liver HD95 (mm)" in page and "QC score" in page
    refused = runner.invoke(app, ["report", str(cohort["masks"]), "-o", str(tmp_path / "x.pdf")])
    assert refused.exit_code == 1 and "HTML page" in refused.output


# ------------------------------------------------------------------------------------------ in the browser


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through chromedriver, with the console log kept; never a download, never the network."""
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                    None)
    driver_path = shutil.which("chromedriver")
    missing = [what for what, found in (("chromium", chromium), ("chromedriver", driver_path)) if not found]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install '.[test]')")
    if missing:
        message = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("SWINSEG_SKIP_BROWSER") == "1":
            pytest.skip(message + "; skipped as SWINSEG_SKIP_BROWSER=1 asks")
        pytest.fail(message + "; set SWINSEG_SKIP_BROWSER=1 to skip them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-proxy-server", "--proxy-server=127.0.0.1:9"):
        options.add_argument(argument)  # any network request would fail (and show in the console log)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _no_alert(driver) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - reading it is the check


def _column(driver, index: int) -> list[str]:
    from selenium.webdriver.common.by import By

    return [row.find_elements(By.TAG_NAME, "td")[index].text
            for row in driver.find_elements(By.CSS_SELECTOR, "#cohort tbody tr")]


def test_page_in_chromium(browser, cohort: dict[str, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path, _ = rp.write_review(cohort["masks"], tmp_path / "review.html", images=cohort["scans"],
                              reference=cohort["refs"])
    browser.get(path.as_uri())
    _no_alert(browser)
    assert browser.find_elements(By.CSS_SELECTOR, "#cohort img") == []  # the name did not become an element
    assert _column(browser, 0) == ["bad", "good", XSS]  # flagged first; the injected name shows as text
    assert not browser.find_element(By.ID, "case").is_displayed()
    browser.save_screenshot(str(tmp_path / "table.png"))

    headers = browser.find_elements(By.CSS_SELECTOR, "#cohort th")
    assert [h.text for h in headers[:3]] == ["case", "QC", "QC score"]
    headers[2].click()  # QC score ascending, the case without a score last
    assert _column(browser, 2) == ["0.100", "0.950", ""]
    headers[2].click()
    assert _column(browser, 2) == ["0.950", "0.100", ""]
    assert headers[2].get_attribute("aria-sort") == "descending"
    headers[0].click()
    assert _column(browser, 0) == sorted(["bad", "good", XSS], key=str.lower)

    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#cohort tbody tr") if r.text.startswith("bad"))
    row.click()
    assert browser.find_element(By.ID, "case").is_displayed()
    assert browser.find_element(By.ID, "case-title").text == "bad"
    assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#qc-reasons li")] == [
        "class 2 missing", "<b>tiny</b> liver"]
    assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#legend li")] == ["liver"]  # 2 is absent
    mask = browser.find_element(By.ID, "mask")
    label = browser.find_element(By.ID, "slice-label")
    slider = browser.find_element(By.ID, "slice")
    first_src, first_label = mask.get_attribute("src"), label.text
    assert first_label.endswith("of 6)")
    browser.save_screenshot(str(tmp_path / "case.png"))

    slider.send_keys(Keys.HOME)  # the slider: to the first slice
    assert label.text == "slice 0 (1 of 6)" and mask.get_attribute("src") != first_src
    viewer = browser.find_element(By.ID, "viewer")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(viewer), 0, 120).perform()  # the wheel
    assert label.text == "slice 1 (2 of 6)"

    slider.send_keys(Keys.ARROW_RIGHT)  # slice 2 holds organ 1
    assert label.text == "slice 2 (3 of 6)"
    before = viewer.screenshot_as_png
    opacity = browser.find_element(By.ID, "opacity")
    opacity.send_keys(Keys.HOME)  # overlay fully transparent
    assert float(mask.value_of_css_property("opacity")) == 0.0
    assert browser.find_element(By.ID, "opacity-label").text == "0%"
    assert viewer.screenshot_as_png != before  # the overlay is gone from the picture
    opacity.send_keys(Keys.END)
    assert float(mask.value_of_css_property("opacity")) == 1.0
    browser.save_screenshot(str(tmp_path / "opaque.png"))

    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#cohort tbody tr") if r.text.startswith("<img"))
    row.click()
    assert browser.find_element(By.ID, "case-title").text == XSS
    assert browser.find_element(By.ID, "qc-verdict").text == "QC: no qc block in the statistics file"
    browser.save_screenshot(str(tmp_path / "injected_name.png"))
    _no_alert(browser)
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == []


def test_page_without_scans_in_chromium(browser, cohort: dict[str, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    path, _ = rp.write_review(cohort["masks"] / "good.nii.gz", tmp_path / "review.html")
    browser.get(path.as_uri())
    browser.find_element(By.CSS_SELECTOR, "#cohort tbody tr").click()
    assert not browser.find_element(By.ID, "scan").is_displayed()  # no broken picture
    mask = browser.find_element(By.ID, "mask")
    assert mask.is_displayed() and mask.size["width"] > 100 and mask.size["height"] > 50
    assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#legend li")] == ["liver", "label_2"]
    browser.save_screenshot(str(tmp_path / "no_scan.png"))
    assert [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")] == []
