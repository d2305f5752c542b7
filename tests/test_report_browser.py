"""The report in a real browser: Debian's headless Chromium renders it offline; Tables 1-3 and
Figure 3 are there and decoded, and a screenshot is taken (in pytest's temporary folder: a test
writes nothing into the repository)."""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from mrsr.report import render
from report_fixtures import build_results, report_config

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium missing: run `bash scripts/setup.sh test` (installs Debian's chromium as root)",
)
# No network, no profile state, no background services: the report must render from the file alone.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--virtual-time-budget=5000"]


class Links(HTMLParser):
    """Every resource reference: src of any element, href of <link>, and url(...) in styles."""

    def __init__(self) -> None:
        super().__init__()
        self.resources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (name in ("src", "srcset", "poster", "data") or (tag == "link" and name == "href")):
                self.resources.append(value)
            if value and name == "style":
                self.resources += re.findall(r"url\(([^)]*)\)", value)

    def handle_data(self, data: str) -> None:
        if self.lasttag == "style":
            self.resources += re.findall(r"url\(([^)]*)\)", data)


@pytest.fixture(scope="module")
def report(tmp_path_factory, default_config) -> Path:
    root = tmp_path_factory.mktemp("report")
    config = report_config(default_config)
    inputs = build_results(root, config)
    path = root / "report.html"
    path.write_text(render(config, inputs), encoding="utf-8")
    return path


def chromium(report: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, report.as_uri()],
                          capture_output=True, text=True, timeout=120)


def test_report_references_no_remote_resource(report):
    parser = Links()
    parser.feed(report.read_text(encoding="utf-8"))
    assert parser.resources, "the report embeds its figures"
    remote = [r for r in parser.resources if re.match(r"\s*['\"]?(https?:)?//", r)]
    assert not remote, f"remote resources: {remote}"
    assert all(r.startswith("data:image/png;base64,") for r in parser.resources)


def test_chromium_renders_three_tables_and_figure3(report, tmp_path):
    dom = chromium(report, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for table in ("table1-data", "table2-data", "table3-data"):
        match = re.search(rf'<table id="{table}">(.*?)</table>', html, re.S)
        assert match, f"{table} not in the rendered DOM"
        assert match.group(1).count("<tr>") >= 3, f"{table} has no data rows"
    assert re.search(r'<img id="figure3-img"[^>]*data-decoded="yes"', html), "Figure 3 not decoded by the browser"
    assert 'data-decoded="no"' not in html, "an embedded figure failed to decode"
    assert "Ours" in html and "Test CPU" in html

    shot = tmp_path / "report-screenshot.png"
    result = chromium(report, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,4000")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 50_000
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50, "the screenshot is (nearly) one colour"
