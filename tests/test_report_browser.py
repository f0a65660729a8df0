"""The report as a person sees it: rendered by headless Chromium, measured, screenshotted.

For a small sweep and a single run, the report is opened at 1400 px and at a narrow 900 px.
A script added to a copy of report.html measures, once the page has loaded, whether the page
scrolls sideways, whether the headline table fits the page or scrolls inside its own box, and
whether every figure image decoded; Chromium's ``--dump-dom`` hands the numbers back. The
screenshots are kept under ``$DESIM_ARTIFACTS`` (or the test's tmp_path), printed by the test.

Skipped, with the reason, where no Chromium is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from desim.cli import main

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
)

MEASURE = """<script>
window.addEventListener("load", () => {
  const box = document.getElementById("headline-box");
  const table = document.getElementById("headline");
  const imgs = [...document.querySelectorAll("figure img")];
  const r = box.getBoundingClientRect();
  const m = {
    viewport: window.innerWidth,
    page_scroll_width: document.documentElement.scrollWidth,
    box_right: r.right, box_client_width: box.clientWidth,
    table_width: table.scrollWidth, box_overflow_x: getComputedStyle(box).overflowX,
    images: imgs.length,
    images_loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    headers: [...table.querySelectorAll("th")].map(th => th.textContent),
  };
  const pre = document.createElement("pre");
  pre.id = "desim-measure";
  pre.textContent = "MEASURE" + JSON.stringify(m) + "END";
  document.body.appendChild(pre);
});
</script>"""


def _chromium(args: list[str], tmp: Path) -> str:
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def _measure(html: Path, width: int, tmp: Path) -> dict:
    probe = html.with_name("measured.html")
    probe.write_text(html.read_text().replace("</body>", MEASURE + "</body>"))
    dom = _chromium(
        [
            f"--window-size={width},1200",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        tmp,
    )
    probe.unlink()
    found = re.search(r"<pre id=\"desim-measure\">MEASURE(.*?)END</pre>", dom, re.S)
    assert found, "the measuring script did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _artifacts(tmp_path: Path) -> Path:
    d = Path(os.environ.get("DESIM_ARTIFACTS") or tmp_path) / "report-screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    runner = CliRunner()
    exp = tmp / "quick.yaml"
    exp.write_text(
        yaml.safe_dump(
            {
                "name": "quick",
                "base": str(ROOT / "configs" / "default.yaml"),
                "set": {"duration": "12ms", "warmup": "2ms"},
                "seed": 2023,
                "replications": 2,
                "sweep": {
                    "grid": {"machine.cpus": [2, 4]},
                    "list": [
                        {"allocator.name": "generic"},
                        {"allocator.name": "powerpc", "machine.page_size": "64KiB"},
                        {"allocator.name": "s390"},
                    ],
                },
                "report": {"x": "machine.cpus"},
            }
        )
    )
    r = runner.invoke(main, ["sweep", str(exp), "--out", str(tmp / "sweep"), "-j", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        main,
        [
            "run",
            str(ROOT / "configs" / "default.yaml"),
            "--out",
            str(tmp / "run"),
            "--set",
            "duration=12ms",
            "--set",
            "warmup=2ms",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    out = {}
    for kind in ("sweep", "run"):
        r = runner.invoke(main, ["report", str(tmp / kind)])
        assert r.exit_code == 0, r.output
        out[kind] = tmp / kind / "report" / "report.html"
    return out


@pytest.mark.parametrize("kind", ["sweep", "run"])
@pytest.mark.parametrize("width", [1400, 900])
def test_report_fits_the_page_and_every_figure_loads(reports, kind, width, tmp_path):
    html = reports[kind]
    m = _measure(html, width, tmp_path)
    # The page never scrolls sideways: whatever is wide scrolls inside its own box.
    assert m["page_scroll_width"] <= m["viewport"], m
    assert m["box_right"] <= m["viewport"], m
    assert m["table_width"] <= m["box_client_width"] or m["box_overflow_x"] in ("auto", "scroll")
    # Each metric column names one unit in its header; the answer to the main question first.
    assert m["headers"][:1] == ["design"]
    metric_heads = [h for h in m["headers"] if h.startswith("waste")]
    assert metric_heads and all(re.search(r"\((B|KiB|MiB|GiB)\)$", h) for h in metric_heads)
    assert m["images"] >= (9 if kind == "sweep" else 7)
    assert m["images_loaded"] == m["images"], m
    shots = _artifacts(tmp_path)
    png = shots / f"{kind}-{width}.png"
    _chromium([f"--window-size={width},9000", f"--screenshot={png}", html.as_uri()], tmp_path)
    assert png.stat().st_size > 10_000
    print(f"screenshot: {png}")


def test_headline_cells_carry_no_units(reports):
    """Units live in the header; a cell is a number (± a number), so a column never mixes."""
    text = reports["sweep"].read_text()
    table = text[
        text.index('<table class="headline"') : text.index(
            "</table>", text.index('class="headline"')
        )
    ]
    cells = re.findall(r"<td class=\"\">(.*?)</td>", table)
    assert cells
    for c in cells:
        assert re.fullmatch(r"[–0-9.,]+( ± [0-9.,]+)?", c), c
