"""The HTML report in a real browser (Debian's chromium, driven headless by playwright).

The report is built from real explanations: the bundled EfficientNet-Lite0 on four
skimage.data photographs, Grad-CAM and the input gradient, with deletion/insertion curves of
the Grad-CAM maps. Oracles: the numbers the page shows are checked against the records
(confidences from ``model.classify``), the sort order against Python's ``sorted``, and the
screenshot must not be blank (pixel variance).

.ci/run installs chromium (apt) and sets ONNXPLAIN_REQUIRE_BROWSER=1, so there a missing
browser fails instead of skipping.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    if os.environ.get("ONNXPLAIN_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"{CHROMIUM} is missing (apt-get install -y chromium), and the browser tests are required.")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")

import onnxplain  # noqa: E402
from onnxplain.report import from_explanations, write_report  # noqa: E402

#: name -> (image, true ImageNet class); the rocket (a missile, 657) is predicted "drilling platform"
PHOTOS = {"chelsea.png": ("chelsea", 285), "coffee.png": ("coffee", 967),
          "astronaut.png": ("astronaut", None), "rocket.png": ("rocket", 657)}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from skimage import data

    model = onnxplain.load_model()
    items, evaluations, truths = [], [], []
    for fn, truth in PHOTOS.values():
        image = getattr(data, fn)()
        cam = onnxplain.grad_cam(model, image)
        grad = onnxplain.gradient_attribution(model, image)
        ev = onnxplain.evaluate(model, image, cam, step=224 * 224 // 8)
        items.append((image, [cam, grad]))
        evaluations.append([ev, None])
        truths.append(truth)
    run = from_explanations(model, items, names=list(PHOTOS), true_labels=truths, evaluations=evaluations,
                            title="browser test")
    out = tmp_path_factory.mktemp("report")
    index = write_report(run, out)
    return pathlib.Path(index), run


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture()
def page(browser, report):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
    page.on("request", lambda r: None if r.url.startswith("file://") else problems.append(f"network request: {r.url}"))
    page.goto(report[0].as_uri())
    page.wait_for_selector("#images tbody tr")
    page.problems = problems
    yield page
    page.close()


def _names(page) -> list[str]:
    return page.eval_on_selector_all("#images tbody tr", "rows => rows.map(r => r.dataset.name)")


def test_page_loads_without_errors_or_network_and_has_one_row_per_image(page, report):
    _, run = report
    assert _names(page) == [im.name for im in run.images]
    # every thumbnail (one per method per image) decoded
    page.wait_for_function("() => [...document.querySelectorAll('#images td.thumb img')].every(i => i.complete)")
    sizes = page.eval_on_selector_all("#images td.thumb img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(sizes) == len(run.images) * 2 and min(sizes) > 0
    # the summary names the model and both methods; the metric table has the Grad-CAM means
    summary = page.inner_text("#summary")
    assert "efficientnet_lite0.onnx" in summary and "gradcam" in summary and "gradient" in summary
    means = np.mean([im.maps[0].metrics["deletion"] for im in run.images])
    assert f"{means:.3f}" in page.inner_text("#method-table")
    # metric distributions (deletion, insertion) and the mean deletion/insertion curves of Grad-CAM
    titles = page.eval_on_selector_all("#plots .plot .title", "ts => ts.map(t => t.textContent)")
    assert titles == ["deletion AUC (lower is better)", "insertion AUC (higher is better)",
                      "mean deletion curve", "mean insertion curve"]
    assert page.locator("#plots svg polyline").count() == 2 and page.locator("#plots svg rect").count() > 4
    assert page.problems == []


def test_sorting_by_confidence_reorders_rows(page, report):
    _, run = report
    conf = {im.name: im.confidence for im in run.images}
    before = _names(page)
    page.click("#images th[data-key=conf]")
    desc = _names(page)
    assert desc == sorted(conf, key=lambda n: -conf[n]) and desc != before
    page.click("#images th[data-key=conf]")
    assert _names(page) == sorted(conf, key=lambda n: conf[n])
    shown = page.eval_on_selector_all("#images tbody td.conf", "tds => tds.map(t => parseFloat(t.textContent))")
    assert shown == sorted(round(c, 3) for c in conf.values())
    assert page.problems == []


def test_problems_first_and_filter(page, report):
    _, run = report
    wrong = [im.name for im in run.images if im.correct is False]
    assert wrong == ["rocket.png"]  # the photo set's one misclassification (a missile called a drilling platform)
    page.click("#problems")
    order = _names(page)
    rest = sorted((im for im in run.images if im.correct is not False), key=lambda im: im.confidence)
    assert order == wrong + [im.name for im in rest]
    assert page.get_attribute("#images tbody tr:first-child", "class").startswith("wrong")
    page.select_option("#show", "wrong")
    assert _names(page) == wrong
    page.select_option("#show", "all")
    page.fill("#filter", "espresso")
    assert _names(page) == ["coffee.png"]
    assert page.inner_text("#count") == f"1 of {len(run.images)} images"
    assert page.problems == []


def test_per_image_view_and_screenshot(page, report, tmp_path):
    index, run = report
    page.click("#images tbody tr[data-name='chelsea.png']")
    page.wait_for_selector("#detail.open")
    assert page.inner_text("#detail-title") == "chelsea.png"
    assert not page.is_visible("#overview")
    page.wait_for_function("() => [...document.querySelectorAll('#detail img')].every(i => i.complete)")
    widths = page.eval_on_selector_all("#detail img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 3 and min(widths) > 0          # photo + one panel per method
    panels = page.eval_on_selector_all("#detail .panel[data-method]", "ps => ps.map(p => p.dataset.method)")
    assert panels == ["gradcam", "gradient"]
    bars = page.inner_text("#detail")
    assert "|d score / d pixel| (sum over RGB)" in bars     # colour bars say what the number means
    assert page.locator("#detail svg polyline").count() == 2  # deletion and insertion curve of Grad-CAM
    shot = tmp_path / "detail.png"
    page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), np.float64)
    assert pixels.shape[0] > 400 and pixels.std() > 20, "screenshot looks blank"
    page.click("#detail .back")
    assert page.is_visible("#overview") and not page.is_visible("#detail")
    assert page.problems == []


def test_report_folder_is_self_contained(report):
    index, run = report
    html = index.read_text(encoding="utf-8")
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    refs = {p for p in __import__("re").findall(r'"(report/[^"]+)"', html)}
    assert refs and all((index.parent / r).is_file() for r in refs)
