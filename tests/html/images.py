"""The report's pictures: screenshots of the HTML pages of tests/html/conftest.py's CASES in headless Chromium,
compared with golden images by mean pixel difference. The README's copies under docs/images/ come from here:

    .venv/bin/python -m tests.html.images docs/images
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.html.browser import Browser, chromium_path

WIDTH, HEIGHT = 1280, 1000  # the viewport every screenshot is taken at
PICTURES = ("resnet50", "gpt2_train")  # the CASES shown in the README


def screenshot(browser: Browser, page: Path, png: Path) -> Path:
    """The top WIDTH x HEIGHT of ``page``, as shown in Chromium, into ``png``."""
    tab = browser.page(WIDTH, HEIGHT)
    try:
        tab.open(page)
        return tab.screenshot(png)
    finally:
        tab.close()


def mean_difference(a: Path, b: Path) -> float:
    """The mean absolute difference of two images' grey levels (0 to 255); images of other sizes are resized to the
    first's."""
    from PIL import Image, ImageChops, ImageStat

    first = Image.open(a).convert("L")
    second = Image.open(b).convert("L")
    if second.size != first.size:
        second = second.resize(first.size)
    return float(ImageStat.Stat(ImageChops.difference(first, second)).mean[0])


def main(argv: list[str]) -> int:
    from tests.html.conftest import build_case, case_html

    out = Path(argv[0] if argv else "docs/images")
    executable = chromium_path()
    if executable is None:
        print("no chromium: apt-get install chromium", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Browser(executable) as browser:
        for name in PICTURES:
            report, description = build_case(name)
            page = Path(tmp) / f"{name}.html"
            page.write_text(case_html(name, report, description), encoding="utf-8")
            print(screenshot(browser, page, out / f"report_{name}.png"))
        # the module table of resnet50's page, scrolled to, and a comparison page
        report, description = build_case("resnet50")
        page = Path(tmp) / "table.html"
        page.write_text(case_html("resnet50", report, description), encoding="utf-8")
        tab = browser.page(WIDTH, HEIGHT)
        try:
            tab.open(page)
            # hide what is above the module table, so the top of the page is the table
            tab.evaluate("for (const el of document.querySelectorAll('main.tc-page > *')) {"
                         " if (!el.querySelector('table')) el.style.display = 'none'; }")
            print(tab.screenshot(out / "report_table.png"))
        finally:
            tab.close()
        page = Path(tmp) / "compare.html"
        page.write_text(_compare_html(), encoding="utf-8")
        print(screenshot(browser, page, out / "report_compare.png"))
    return 0


def _compare_html() -> str:
    import torchcost

    c = torchcost.compare("torchvision:resnet18", "torchvision:mobilenet_v3_large", "torchvision:efficientnet_b0",
                          meta=True)
    return c.to_html()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
