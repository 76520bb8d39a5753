"""``report.html`` of ``uqeval score`` and ``uqeval compare``: self-contained, escaped, with
the numbers of ``scores.json``; the slow test renders both pages in headless Chromium."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import write_synthetic_store
from rich.table import Table

import uqeval
from uqeval.report.html_report import REPORT_PAGE
from uqeval.report.html_tables import plain_table
from uqeval.report.tables import format_value
from uqeval.synth import image_plan
from uqeval.text import shortened

#: A domain name that would run script if the page did not escape it.
HOSTILE = "<img src=x onerror=alert(1)>&<script>alert(2)</script>"


class Page(HTMLParser):
    """What a page is made of: its elements with their attributes, its text, its scripts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.elements if tag == name]

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


def outside_loads(page: Page) -> list[str]:
    """Every ``src``/``href`` that reaches outside the report folder, and every stylesheet link."""
    found = []
    for tag, attrs in page.elements:
        for name in ("src", "href", "srcset", "action", "data", "poster"):
            value = (attrs.get(name) or "").strip().lower()
            if value.startswith(("http:", "https:", "//", "ftp:", "file:")) or "://" in value:
                found.append(f"<{tag} {name}={value[:60]}>")
        if tag == "link":
            found.append(f"<link {attrs}>")
    return found


def layout_with(domain: str, n_images: int = 24) -> list[tuple[str, str]]:
    return [(domain if split == "noise" else split, role) for split, role in image_plan(n_images)]


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """Two runs on stores with a hostile domain name (one with figures, one without), and their comparison."""
    folder = tmp_path_factory.mktemp("html")
    layout = layout_with(HOSTILE)
    folders = {}
    for scenario, plots in (("disentangled", True), ("entangled", False)):
        store = write_synthetic_store(
            folder / f"{scenario}.zarr", layout=layout, scenario=scenario, size=16, eu=2, au=3, raters=2, model=scenario
        )
        folders[scenario] = folder / f"{scenario}-scores"
        uqeval.save_report(uqeval.score(store), folders[scenario], plots=plots)
    lonely = folder / "lonely-scores"  # a run folder without report.html: no link to it
    shutil.copytree(folders["entangled"], lonely)
    (lonely / REPORT_PAGE).unlink()
    data = json.loads((lonely / "scores.json").read_text())
    data["model"]["model"] = "lonely"
    (lonely / "scores.json").write_text(json.dumps(data))
    folders["comparison"] = folder / "comparison"
    comparison = uqeval.compare([folders["disentangled"], folders["entangled"], lonely])
    uqeval.save_comparison(comparison, folders["comparison"])
    return folders


def page_of(folder: Path) -> tuple[str, Page]:
    text = (folder / REPORT_PAGE).read_text(encoding="utf-8")
    return text, Page(text)


def ood_eu_auroc(folder: Path) -> str:
    """The OOD EU AUROC of ``scores.json`` (the image score of Δ) to 3 decimals."""
    data = json.loads((folder / "scores.json").read_text())
    aggregation = data["conventions"]["aggregation"]
    [value] = [
        row["value"]
        for row in data["results"]
        if (row["task"], row["split"], row["measure"], row["metric"], row["aggregation"])
        == ("oodd", "ood", "eu", "auroc", aggregation)
    ]
    return f"{value:.3f}"


@pytest.mark.parametrize("name", ["disentangled", "entangled", "comparison"])
def test_the_page_loads_nothing_from_outside(reports, name):
    text, page = page_of(reports[name])
    assert outside_loads(page) == []
    assert all((attrs.get("src") or "").startswith("data:image/svg+xml;base64,") for attrs in page.tags("img"))
    [script] = page.tags("script")  # one script, inline, and the policy allows it alone
    assert "src" not in script
    [policy] = [attrs["content"] for attrs in page.tags("meta") if attrs.get("http-equiv") == "Content-Security-Policy"]
    digest = base64.b64encode(hashlib.sha256("".join(page.scripts).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "img-src data:" in policy
    assert "<style>" in text and not page.tags("link")


@pytest.mark.parametrize("name", ["disentangled", "comparison"])
def test_a_hostile_domain_name_is_text(reports, name):
    text, page = page_of(reports[name])
    assert HOSTILE not in text and "<script>alert" not in text and "<img src=x" not in text
    assert shortened(HOSTILE) in page.plain  # shown, as the terminal shows it
    assert [tag for tag, _ in page.elements].count("script") == 1
    assert not [attrs for attrs in page.tags("img") if attrs.get("src") == "x" or "onerror" in attrs]


def test_the_score_page_shows_the_numbers_of_scores_json(reports):
    folder = reports["disentangled"]
    _, page = page_of(folder)
    shown = page.plain
    assert ood_eu_auroc(folder) in shown
    data = json.loads((folder / "scores.json").read_text())
    for row in data["entanglement"]:
        assert format_value(row["delta"], digits=2) in shown, row
    assert f"uqeval {uqeval.__version__}" in shown
    for heading in ("What was scored", "Headline", "Tables", "Figures", "Notes", "Provenance"):
        assert heading in shown
    # In the order a reader needs them.
    positions = [shown.index(heading) for heading in ("What was scored", "Headline: entanglement", "Provenance")]
    assert positions == sorted(positions)
    assert "EU detects the shift" in shown  # the headline's reading of OOD detection


def test_figures_are_the_svg_files_of_the_folder(reports):
    folder = reports["disentangled"]
    _, page = page_of(folder)
    images = page.tags("img")
    assert len(images) == 3
    embedded = {base64.b64decode(attrs["src"].split(",", 1)[1]) for attrs in images}
    assert embedded == {(folder / f"{name}.svg").read_bytes() for name in ("roc", "reliability", "maps")}


def test_without_plots_the_page_has_no_figures_and_says_why(reports):
    _, page = page_of(reports["entangled"])
    assert page.tags("img") == []
    assert "--no-plots" in page.plain


def test_the_comparison_page_links_each_run_report_beside_it(reports):
    folder = reports["comparison"]
    _, page = page_of(folder)
    links = [attrs["href"] for attrs in page.tags("a") if (attrs.get("href") or "").endswith(REPORT_PAGE)]
    assert links == ["../disentangled-scores/report.html", "../entangled-scores/report.html"]
    assert all((folder / link).resolve().is_file() for link in links)
    assert "none beside it" in page.plain  # the run without one
    assert len(page.tags("img")) == 2  # entanglement and collapse
    assert len(page.tags("figure")) == 3  # and the ranks, drawn inline
    assert ood_eu_auroc(reports["disentangled"]) in page.plain


def test_plain_table_keeps_the_terminal_cells_and_repeats_block_labels():
    table = Table(title="T", caption="c")
    for name in ("image score", "measure", "ood"):
        table.add_column(name, justify="right" if name == "ood" else "left")
    table.add_row("border", "AU", "0.100")
    table.add_row("", "EU ✓", "0.900", end_section=True)
    table.add_row("mean", "AU", "–")
    plain = plain_table(table)
    assert (plain.title, plain.caption) == ("T", "c")
    assert [column.numeric for column in plain.columns] == [False, False, True]
    assert [[cell.text for cell in row] for row in plain.rows] == [
        ["border", "AU", "0.100"],
        ["border", "EU ✓", "0.900"],
        ["mean", "AU", "–"],
    ]
    assert [row[0].repeated for row in plain.rows] == [False, True, False]
    assert [row[1].measure for row in plain.rows] == ["au", "eu", "au"]


# ---------------------------------------------------------------- in a browser


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("Chromium is not installed (apt-get install chromium): report.html is not rendered in a browser")


def render(browser: str, page: Path, screenshot: Path, profile: Path) -> str:
    """The DOM of ``page`` after its scripts ran, and a 1280 px wide screenshot of it."""
    common = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=3000",
        "--window-size=1280,2000",
    ]
    url = page.resolve().as_uri()
    subprocess.run([*common, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    dumped = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    return dumped.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["disentangled", "comparison"])
def test_both_pages_render_in_headless_chromium(reports, name, tmp_path):
    from PIL import Image, ImageStat

    browser = chromium()
    screenshot = tmp_path / "page.png"
    dom = Page(render(browser, reports[name] / REPORT_PAGE, screenshot, tmp_path / "profile"))
    assert ood_eu_auroc(reports["disentangled"]) in dom.plain
    images = [attrs for attrs in dom.tags("img") if (attrs.get("src") or "").startswith("data:image/svg+xml")]
    assert len(images) == len(dom.tags("img")) >= 2
    assert len(dom.tags("figure")) >= 3
    assert outside_loads(dom) == []
    # The hostile name is text: no element it names exists, and the one script is ours.
    assert shortened(HOSTILE) in dom.plain
    assert not [attrs for attrs in dom.tags("img") if attrs.get("src") == "x" or "onerror" in attrs]
    assert len(dom.tags("script")) == 1
    assert "alert(2)" not in "".join(dom.scripts)
    # The page's own script ran: it made every header of a sortable table focusable.
    assert all(attrs.get("tabindex") == "0" for attrs in dom.tags("th"))
    # Not a blank page.
    with Image.open(screenshot) as image:
        assert image.size == (1280, 2000)
        grey = image.convert("L")
        assert ImageStat.Stat(grey).stddev[0] > 20
        assert len(grey.getcolors(256 * 256) or []) > 20


def test_a_run_without_ood_images_or_delta_still_gets_a_page(tmp_path):
    layout = [(split, role) for split, role in image_plan(16) if split == "id"]
    store = write_synthetic_store(tmp_path / "id-only.zarr", layout=layout, size=16, eu=2, au=2, raters=2)
    scores = uqeval.score(store, tasks=["oodd", "cal"])
    uqeval.save_report(scores, tmp_path / "report")
    _, page = page_of(tmp_path / "report")
    assert outside_loads(page) == []
    assert "Calibration: ACE" in page.plain and "on id, TU is calibrated" in page.plain
    assert "OOD detection: AUROC" not in page.plain  # not scored: the notes say why
    assert [note for note in scores.notes if "oodd" in str(note)] and page.tags("li")
    assert len(page.tags("script")) == 1 and page.plain.endswith("works offline.")


#: Appended to a copy of a page (its policy removed, so that this script may run): sorts the
#: first table by its last column twice (descending), filters the first filterable table
#: for "blur", and writes what the rows then are into the body's ``data-result``.
DRIVER = """<script>
var table = document.querySelector("table.sortable:not(.headline)");
var header = table.querySelectorAll("thead th");
header[header.length - 1].click(); header[header.length - 1].click();
var sorted = Array.prototype.map.call(table.tBodies[0].rows, function (row) {
  return row.cells[row.cells.length - 1].textContent; });
var filter = document.querySelector("input.filter");
filter.value = "blur"; filter.dispatchEvent(new Event("input"));
var shown = Array.prototype.filter.call(document.getElementById(filter.getAttribute("data-table")).tBodies[0].rows,
  function (row) { return !row.hidden; }).map(function (row) { return row.textContent.indexOf("blur") >= 0; });
document.body.setAttribute("data-result", JSON.stringify({sorted: sorted, shown: shown}));
</script></body>"""


@pytest.mark.slow
def test_tables_sort_and_filter_in_headless_chromium(reports, tmp_path):
    browser = chromium()
    page = (reports["disentangled"] / REPORT_PAGE).read_text(encoding="utf-8")
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page).replace("</body>", DRIVER)
    (tmp_path / "driven.html").write_text(page, encoding="utf-8")
    dom = render(browser, tmp_path / "driven.html", tmp_path / "driven.png", tmp_path / "profile")
    [result] = re.findall(r'data-result="([^"]*)"', dom)
    result = json.loads(result.replace("&quot;", '"'))
    values = [float(text) for text in result["sorted"] if text not in ("–", "")]
    assert values == sorted(values, reverse=True) and len(values) >= 3
    assert result["shown"] and all(result["shown"])  # every row left shows "blur"
