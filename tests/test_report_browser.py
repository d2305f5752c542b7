"""The report in a real browser: Debian's headless Chromium renders it offline; Tables 1-3, the
table of series and patients by side and Figure 3 are there and decoded, a screenshot is taken (in
pytest's temporary folder), and with all 18 jobs no table is wider than a 1280-pixel window and no
Figure 3 label overlaps another (in the layout and in the screenshot)."""

from __future__ import annotations

import html as htmllib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mrsr.report import render
from browser_fixtures import CHROMIUM, FLAGS, Links, require_chromium
from report_fixtures import SPLIT_SERIES, build_results, full_report_config, report_config


@pytest.fixture(scope="module", autouse=True)
def chromium_present() -> None:
    """Before the module's reports are built: without Chromium there is nothing to render them in."""
    require_chromium()


@pytest.fixture(scope="module")
def report(tmp_path_factory, default_config) -> Path:
    root = tmp_path_factory.mktemp("report")
    config = report_config(default_config)
    inputs = build_results(root, config)
    path = root / "report.html"
    path.write_text(render(config, inputs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, default_config, root) -> Path:
    """The report of all 18 jobs (every experiment and scale of config/paper.yaml, quick budgets)."""
    folder = tmp_path_factory.mktemp("full-report")
    config = full_report_config(default_config, yaml.safe_load((root / "config/paper.yaml").read_text()))
    path = folder / "report.html"
    path.write_text(render(config, build_results(folder, config)), encoding="utf-8")
    return path


# Added to a copy of the report (the report itself carries no test code): once the page has loaded,
# it writes the layout as JSON into the DOM, which --dump-dom returns. The report's tables are
# display: block and scroll sideways instead of overflowing, so a table's box never looks too wide:
# its content is measured by its cells (``content``: the farthest cell edge from the table's left)
# and by scrollWidth against the visible width.
LAYOUT_PROBE = """<script>
window.addEventListener("load", function () {
  var out = {viewport: window.innerWidth, page: document.documentElement.scrollWidth, tables: []};
  document.querySelectorAll("table").forEach(function (table, i) {
    var box = table.getBoundingClientRect(), content = 0;
    table.querySelectorAll("th, td").forEach(function (cell) {
      content = Math.max(content, cell.getBoundingClientRect().right - box.left);
    });
    out.tables.push({id: table.id || "table " + i, left: box.left, content: Math.ceil(content),
                     scroll: table.scrollWidth, visible: table.clientWidth});
  });
  // Figure 3's labels: where their text is drawn in the window (a Range covers text that overflows its box).
  out.labels = [];
  document.querySelectorAll("#figure3-grid .fig3-label").forEach(function (label) {
    var range = document.createRange(), r;
    range.selectNodeContents(label);
    r = range.getBoundingClientRect();
    out.labels.push({text: label.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom,
                     cell_left: label.getBoundingClientRect().left,
                     cell_right: label.getBoundingClientRect().right});
  });
  var pre = document.createElement("pre");
  pre.id = "layout-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


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
        match = re.search(rf'<table id="{table}"[^>]*>(.*?)</table>', html, re.S)
        assert match, f"{table} not in the rendered DOM"
        assert match.group(1).count("<tr>") >= 3, f"{table} has no data rows"
    grid = re.search(r'<div id="figure3-grid".*?</div>\s*<img id="figure3-colour-bar"[^>]*>', html, re.S)
    assert grid, "Figure 3 not in the rendered DOM"
    panels = re.findall(r"<img [^>]*>", grid.group(0))  # 4 columns: whole, zoom, 3 errors, bar
    assert len(panels) == 4 + 4 + 3 + 1 and all('data-decoded="yes"' in img for img in panels), "Figure 3 not decoded"
    assert 'data-decoded="no"' not in html, "an embedded figure failed to decode"
    split = re.search(r'<table id="split-data">(.*?)</table>', html, re.S)
    assert split, "the table of series by side is not in the rendered DOM"
    sides = re.findall(r'<tr><td class="l">(\w+)</td><td class="l">([^<]+)</td>', split.group(1))
    assert sides == [(side, patient) for side, patient, _ in SPLIT_SERIES]
    assert "Ours" in html and "Test CPU" in html

    shot = tmp_path / "report-screenshot.png"
    result = chromium(report, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,4000")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 50_000
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50, "the screenshot is (nearly) one colour"


def test_every_table_fits_a_1280_pixel_page(full_report, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(full_report.read_text(encoding="utf-8").replace("</body>", LAYOUT_PROBE + "</body>"), encoding="utf-8")
    dom = chromium(probed, tmp_path / "profile", "--dump-dom", "--window-size=1280,4000")
    assert dom.returncode == 0, dom.stderr[-2000:]
    match = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom.stdout, re.S)
    assert match, "the layout probe did not run"
    layout = json.loads(htmllib.unescape(match.group(1)))
    assert layout["viewport"] == 1280, "the window is not 1280 pixels wide: the check would measure nothing"
    ids = [t["id"] for t in layout["tables"]]
    assert {"table1-data", "table2-data", "table3-data", "bf16-data"} <= set(ids)
    table2 = re.search(r'<table id="table2-data"[^>]*>(.*?)</table>', dom.stdout, re.S).group(1)
    assert table2.count('<tr class="group">') == 3 and table2.count("<tr>") == 1 + 7 + 6 + 6  # 18 jobs, 3 bicubic rows
    wide = [t for t in layout["tables"]
            if t["left"] + t["content"] > 1280 or t["content"] > t["visible"] or t["scroll"] > t["visible"]]
    assert not wide, f"tables wider than the page or scrolling sideways: {wide}"
    assert layout["page"] <= 1280, f"the page is {layout['page']} px wide"


def test_no_figure3_label_overlaps_another(full_report, tmp_path):
    """All 18 jobs (eight panels across 1280 pixels) and a slice name as long as the store's: each
    label's text stays inside its column, in the layout and in the screenshot (blank pixels between
    neighbouring labels)."""
    # The report's Figure 3 section with the report's styles and heading, near the top of the page: the
    # layout's window coordinates are then the screenshot's pixels in a window that needs no scrolling
    # (headless Chromium may take a tall window's screenshot before its lower part is painted).
    html = full_report.read_text(encoding="utf-8")
    section = html[html.index('<h2 id="figure3">'):html.index('<h2 id="recipes">')]
    page = tmp_path / "figure3.html"
    page.write_text(html[:html.index('<h2 id="table1">')] + section + "</body></html>", encoding="utf-8")
    window = "--window-size=1280,900"
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", LAYOUT_PROBE + "</body>"), encoding="utf-8")
    dom = chromium(probed, tmp_path / "profile", "--dump-dom", window)
    assert dom.returncode == 0, dom.stderr[-2000:]
    labels = json.loads(htmllib.unescape(re.search(r'<pre id="layout-probe">(.*?)</pre>', dom.stdout, re.S).group(1)))["labels"]
    assert len(labels) == 8 and labels[0]["text"].startswith("HR (reference)") and "PGBM-002" in labels[0]["text"]
    for a, b in zip(labels, labels[1:]):
        assert a["right"] <= b["left"], f"label {a['text']!r} runs into {b['text']!r}"
    for label in labels:
        assert label["cell_left"] - 0.5 <= label["left"] and label["right"] <= label["cell_right"] + 0.5, label
    assert 0 <= min(label["top"] for label in labels) and max(label["bottom"] for label in labels) <= 900, labels
    shot = tmp_path / "figure3.png"
    result = chromium(page, tmp_path / "profile-shot", f"--screenshot={shot}", window)
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = image.convert("L")
        top, bottom = int(min(l["top"] for l in labels)), int(max(l["bottom"] for l in labels)) + 1
        inked = [any(pixels.getpixel((x, y)) < 200 for y in range(top, bottom)) for x in range(1280)]
        for label in labels:  # the labels' text is in the screenshot, where the layout put it...
            assert any(inked[int(label["left"]):int(label["right"]) + 1]), label["text"]
        for a, b in zip(labels, labels[1:]):  # ...with a blank column between neighbours
            assert not all(inked[int(a["right"]) + 1:int(b["left"])]), f"no gap between {a['text']!r} and {b['text']!r}"
