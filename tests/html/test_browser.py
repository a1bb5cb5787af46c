"""The HTML report in a real browser (headless Chromium over the DevTools protocol): it loads without console errors
or a single network request, the icicle draws one block per module and zooms on a click, the metric switch resizes
it, the timeline's peak label names the report's peak op, the table sorts and filters, and the pictures match the
golden screenshots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from torch import nn

import torchcost
from tests.html.browser import Browser
from tests.html.images import mean_difference, screenshot
from torchcost.report import CostReport

GOLDEN = Path(__file__).parent / "golden"
TOLERANCE = 3.0  # mean grey-level difference (of 255) a screenshot may differ from its golden image by

Case = Callable[[str], tuple[CostReport, str]]
PageFile = Callable[[str], Path]


@pytest.mark.parametrize("name", ["simple_cnn", "resnet50", "gpt2_train"])
def test_loads_offline_without_errors(browser: Browser, page_file: PageFile, name: str) -> None:
    tab = browser.page()
    tab.open(page_file(name))
    assert tab.errors() == []
    assert tab.requests() == []  # not even a favicon: the page is one file
    assert tab.evaluate("document.querySelectorAll('.tc-icicle svg').length") == 1
    tab.close()


def test_icicle_has_a_block_per_module(browser: Browser, page_file: PageFile, case: Case) -> None:
    report, _ = case("simple_cnn")
    tab = browser.page()
    tab.open(page_file("simple_cnn"))
    # simple_cnn: the model, features (Sequential) with 6 layers, and the classifier: 9 modules
    assert len(report.modules) == 9
    assert tab.evaluate("document.querySelectorAll('#m0-icicle .tc-node').length") == 9
    names = tab.evaluate("[...document.querySelectorAll('#m0-icicle .tc-node')].map(g => g.dataset.name)")
    assert names == [m.name for m in report.modules]
    tab.close()


def test_hand_built_sequential(browser: Browser, tmp_path: Path) -> None:
    import torch

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 16), nn.Tanh()), nn.Linear(16, 2))
    report = torchcost.analyze(model, torch.randn(4, 8))
    page = tmp_path / "seq.html"
    page.write_text(report.to_html(), encoding="utf-8")
    tab = browser.page()
    tab.open(page)
    assert tab.errors() == []
    assert tab.evaluate("document.querySelectorAll('.tc-node').length") == 7  # 1 + 4 + 2
    assert tab.evaluate("document.querySelectorAll('#tc-table tbody tr').length") == 7
    tab.close()


def test_click_zooms_into_a_subtree_and_back(browser: Browser, page_file: PageFile, case: Case) -> None:
    report, _ = case("resnet50")
    tab = browser.page()
    tab.open(page_file("resnet50"))
    assert tab.evaluate("document.querySelector('.tc-icicle-root').textContent") == "ResNet"
    tab.click('#m0-icicle .tc-node[data-name="layer1"] rect')
    assert tab.evaluate("document.querySelector('.tc-icicle-root').textContent") == "layer1 (Sequential)"
    shown = tab.evaluate("[...document.querySelectorAll('#m0-icicle .tc-node')].map(g => g.dataset.name)")
    assert shown == [m.name for m in report.module("layer1").walk()]
    # the zoomed root fills the width
    width = tab.evaluate("document.querySelector('#m0-icicle .tc-node rect').getAttribute('width')")
    assert float(width) == pytest.approx(tab.evaluate("document.querySelector('#m0-icicle svg').width.baseVal.value"))
    tab.click('#m0-icicle .tc-node[data-name="layer1.0"] rect')
    assert tab.evaluate("document.querySelector('.tc-icicle-root').textContent") == "layer1.0 (Bottleneck)"
    tab.click('#m0-icicle .tc-node.tc-top rect')  # the top bar: one level up
    assert tab.evaluate("document.querySelector('.tc-icicle-root').textContent") == "layer1 (Sequential)"
    tab.click(".tc-crumb")  # the model's name in the breadcrumbs
    assert tab.evaluate("document.querySelector('.tc-icicle-root').textContent") == "ResNet"
    assert tab.errors() == []
    tab.close()


def _share(tab: object, name: str) -> float:
    js = (f"(() => {{ const r = n => +document.querySelector(`#m0-icicle .tc-node[data-name='${{n}}'] rect`)"
          f".getAttribute('width'); return r('{name}') / r(''); }})()")
    return float(tab.evaluate(js))  # type: ignore[attr-defined]


def test_metric_switch_resizes_the_blocks(browser: Browser, page_file: PageFile, case: Case) -> None:
    report, _ = case("resnet50")
    tab = browser.page()
    tab.open(page_file("resnet50"))
    layer4 = report.module("layer4")
    assert _share(tab, "layer4") == pytest.approx(layer4.flops / report.flops, rel=1e-3)
    tab.click('#m0-icicle .tc-btn[data-metric="params"]')
    assert _share(tab, "layer4") == pytest.approx(layer4.params / report.params, rel=1e-3)
    tab.close()


@pytest.mark.parametrize("name", ["resnet50", "gpt2_train"])
def test_timeline_peak_label_names_the_peak_op(browser: Browser, page_file: PageFile, case: Case, name: str) -> None:
    report, _ = case(name)
    assert report.memory is not None
    tab = browser.page()
    tab.open(page_file(name))
    label = tab.evaluate("(() => { const e = document.getElementById('tc-peak-label'); "
                         "return [e.dataset.op, e.dataset.module, e.textContent]; })()")
    assert label[0] == report.memory.peak_op
    assert label[1] == report.memory.peak_module
    assert f"after {report.memory.peak_op} in {report.memory.peak_module or '(model)'}" in label[2]
    if name == "gpt2_train":  # the phases are marked
        bands = tab.evaluate("[...document.querySelectorAll('.tc-band')].map(b => b.dataset.phase)")
        assert bands == ["forward", "loss", "backward", "optimizer"]
        assert tab.evaluate("document.getElementById('tc-fit').className").endswith("tc-fit-over")
    tab.close()


def test_table_sorts_and_filters(browser: Browser, page_file: PageFile, case: Case) -> None:
    report, _ = case("resnet50")
    tab = browser.page()
    tab.open(page_file("resnet50"))
    rows = "[...document.querySelectorAll('#tc-table tbody tr')].filter(r => r.style.display !== 'none')"
    assert tab.evaluate(f"{rows}.length") == len(report.modules)
    tab.click("#tc-table th:nth-child(3)")  # Params, largest first
    order = tab.evaluate(f"{rows}.map(r => r.dataset.name)")
    leaves = sorted((m for m in report.modules if m.name), key=lambda m: -m.params)
    assert order[0] == "" and order[1] == leaves[0].name  # the model, then its largest module
    tab.click("#tc-table th:nth-child(3)")  # again: smallest first
    assert tab.evaluate(f"{rows}.map(r => r.dataset.name)")[-1] == ""
    tab.evaluate("(() => { const f = document.getElementById('tc-filter'); f.value = 'layer4.2.conv'; "
                 "f.dispatchEvent(new Event('input')); })()")
    assert sorted(tab.evaluate(f"{rows}.map(r => r.dataset.name)")) == ["layer4.2.conv1", "layer4.2.conv2",
                                                                       "layer4.2.conv3"]
    assert tab.evaluate("document.getElementById('tc-count').textContent") == f"3 of {len(report.modules)} rows"
    tab.close()


def test_comparison_page(browser: Browser, tmp_path: Path) -> None:
    c = torchcost.compare("example:standard_conv", "example:depthwise_separable")
    page = tmp_path / "compare.html"
    page.write_text(c.to_html(), encoding="utf-8")
    tab = browser.page()
    tab.open(page)
    assert tab.errors() == [] and tab.requests() == []
    assert tab.evaluate("document.querySelectorAll('.tc-icicle svg').length") == 2
    ratio = tab.evaluate("document.querySelector('tr[data-metric=\"macs\"] .tc-ratio').textContent")
    assert ratio == "0.361x"
    tab.close()


@pytest.mark.parametrize("name", ["resnet50", "gpt2_train"])
def test_screenshot_matches_golden(browser: Browser, page_file: PageFile, name: str, tmp_path: Path,
                                   request: pytest.FixtureRequest) -> None:
    png = screenshot(browser, page_file(name), tmp_path / f"report_{name}.png")
    golden = GOLDEN / f"report_{name}.png"
    if request.config.getoption("--overwrite-golden"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(png.read_bytes())
        return
    assert golden.exists(), f"no golden image {golden}; run pytest --overwrite-golden to create it"
    difference = mean_difference(golden, png)
    assert difference < TOLERANCE, (f"screenshot {png} differs from {golden} by {difference:.2f} grey levels on "
                                    f"average; if intended, rerun with --overwrite-golden")
