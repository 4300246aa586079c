"""The HTML report: one self-contained file whose numbers are the JSON's, checked
in the file itself and in a real browser (headless Chromium): it renders, its
images load, and what a reader sees agrees with scikit-learn over the stored rows."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from greenctl.cli import main
from report_fixtures import UNIT_FACTORS, seed_experiment, seed_with_truth

VARIANTS = ("f16", "q8_0", "q4_0")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# Written into the page copy the browser opens: each image's decoded size, once everything has loaded.
PROBE = ("<script>window.addEventListener('load', () => { for (const img of document.images) {"
         " img.setAttribute('data-natural-width', img.naturalWidth);"
         " img.setAttribute('data-natural-height', img.naturalHeight); }"
         " document.body.setAttribute('data-loaded', 'yes'); });</script>")


class Page(HTMLParser):
    """Cells with their column's unit, images, and the embedded JSON of a report page."""

    def __init__(self, text: str):
        super().__init__()
        self.cells, self.images, self.json_text, self.body = [], [], "", {}
        self._units, self._col, self._cell, self._in_json = [], 0, None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._units = []
        elif tag == "th":
            self._units.append(a.get("data-unit", ""))
        elif tag == "tr":
            self._col = 0
        elif tag == "td":
            self._cell = {**a, "text": "", "unit": self._units[self._col] if self._col < len(self._units) else ""}
        elif tag == "img":
            self.images.append(a)
        elif tag == "script" and a.get("id") == "report-json":
            self._in_json = True
        elif tag == "body":
            self.body = a

    def handle_endtag(self, tag):
        if tag == "td":
            self.cells.append(self._cell)
            self._cell, self._col = None, self._col + 1
        elif tag == "script":
            self._in_json = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._in_json:
            self.json_text += data


@pytest.fixture(scope="module")
def seeded():
    from conftest import drop_database, make_database
    from shared.db import migrate

    url = make_database()
    migrate(url)
    experiment_id, truth = seed_with_truth(url, variants=VARIANTS, samples=30, failed=2)
    partial = seed_experiment(url, variants=VARIANTS, samples=12, failed=1, unfinished=4, seed=3, name="half-way")
    yield {"url": url, "id": experiment_id, "partial_id": partial.experiment_id, "truth": truth}
    drop_database(url)


@pytest.fixture()
def pages(seeded, monkeypatch, tmp_path):
    """experiment id -> (path of its HTML report, its JSON report)."""
    monkeypatch.setenv("GREENCTL_DATABASE_URL", seeded["url"])
    out = {}
    for experiment_id in (seeded["id"], seeded["partial_id"]):
        path = tmp_path / f"report-{experiment_id}.html"
        runner = CliRunner()
        written = runner.invoke(main, ["report", str(experiment_id), "--format", "html", "-o", str(path)],
                                catch_exceptions=False)
        assert written.exit_code == 0 and str(path) in written.stdout
        data = json.loads(runner.invoke(main, ["report", str(experiment_id), "--format", "json"]).stdout)
        out[experiment_id] = (path, data)
    return out


def _resolve(variant: dict, key: str):
    """A report value by data-key: 'f1_weighted', 'energy_split.prompt_kwh_per_inference', 'confusion.<true>.<pred>'."""
    if key.startswith("confusion."):
        _, true_label, predicted = key.split(".", 2)
        c = variant["confusion"]
        return c["matrix"][c["labels"].index(true_label)][c["columns"].index(predicted)]
    value = variant
    for part in key.split("."):
        value = value[part]
    return value


def _shown(text: str, unit: str) -> float:
    number, _, own_unit = text.strip().partition(" ")
    return float(number) * UNIT_FACTORS.get(own_unit or unit, 1.0)


# How each kind of number is rounded on the page: scores to 2 decimals, prompt tokens to whole
# tokens, output tokens to 1 decimal, everything else to 3 significant digits.
ROUNDING = {**{k: dict(abs=0.005 + 1e-9) for k in ("accuracy", "precision_weighted", "recall_weighted",
                                                   "f1_weighted", "precision_macro", "recall_macro", "f1_macro")},
            "prompt_tokens_mean": dict(abs=0.5 + 1e-9), "prompt_tokens_uncached_mean": dict(abs=0.5 + 1e-9),
            "output_tokens_mean": dict(abs=0.05 + 1e-9)}


def check_numbers(page: Page, data: dict, truth: dict | None) -> int:
    """Every data cell's value is the JSON's; its text agrees with scikit-learn (rounded as shown)."""
    checked = 0
    for cell in page.cells:
        if "data-key" not in cell:
            continue
        variant = data["variants"][int(cell["data-variant"])]
        value = json.loads(cell["data-value"])
        assert value == pytest.approx(_resolve(variant, cell["data-key"])), cell
        key, expected = cell["data-key"], (truth or {}).get(variant["variant"], {})
        if key in expected and isinstance(expected[key], float):
            rounding = ROUNDING.get(key, dict(rel=6e-3))
            assert _shown(cell["text"], cell["unit"]) == pytest.approx(expected[key], **rounding), cell
            checked += 1
        elif key in expected:
            assert int(cell["text"]) == expected[key], cell
            checked += 1
    return checked


def test_html_is_self_contained_and_carries_the_json(seeded, pages):
    path, data = pages[seeded["id"]]
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert "http://" not in text and "https://" not in text and "<script src" not in text
    assert len(page.images) == 3
    for img in page.images:
        head, _, payload = img["src"].partition(",")
        assert head == "data:image/png;base64" and base64.b64decode(payload)[:8] == b"\x89PNG\r\n\x1a\n"
    embedded = json.loads(page.json_text.replace("<\\/", "</"))
    assert {k: v for k, v in embedded.items() if k != "generated_at"} == \
        {k: v for k, v in data.items() if k != "generated_at"}
    assert check_numbers(page, data, seeded["truth"]) >= 3 * 12
    assert "estimate, not a measurement" in text and "id=\"partial\"" not in text


def test_partial_experiment_says_so_and_counts_finished_tasks_only(seeded, pages):
    path, data = pages[seeded["partial_id"]]
    exp = data["experiment"]
    assert exp["partial"] is True and exp["n_done"] == 3 * (12 - 4 - 1) and exp["n_failed"] == 3
    assert [v["n"] for v in data["variants"]] == [7, 7, 7]
    assert "Partial experiment: only finished tasks are counted" in path.read_text(encoding="utf-8")
    check_numbers(Page(path.read_text(encoding="utf-8")), data, None)


def _chromium(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium not installed: run `make test` which installs it")
def test_html_renders_in_chromium_with_images_and_numbers(seeded, pages, tmp_path):
    path, data = pages[seeded["id"]]
    probed = tmp_path / "probed.html"
    probed.write_text(path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Page(dom.stdout)
    assert page.body.get("data-loaded") == "yes", "the load event never fired"
    assert len(page.images) == 3
    for img in page.images:           # decoded by the browser: a broken image has naturalWidth 0
        assert int(img["data-natural-width"]) > 300 and int(img["data-natural-height"]) > 200, img["data-figure"]
    assert check_numbers(page, data, seeded["truth"]) >= 3 * 12
    shot = tmp_path / "report.png"
    screenshot = _chromium("--window-size=1200,3000", f"--screenshot={shot}", path.as_uri())
    assert screenshot.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", screenshot.stderr[-2000:]
    assert shot.stat().st_size > 50_000     # a page of tables and figures, not a blank one
