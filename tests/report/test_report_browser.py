"""A real browser reads the report: headless Chromium loads a report.html built from a small synthetic results set,
every image decodes, no element overflows the page, and a screenshot (report.png) is written beside the report.

Without Chromium the test is skipped, saying so; with DTYPELAB_REQUIRE_BROWSER=1 (CI) a missing Chromium fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_helpers import synthetic_store

from dtypelab.report import sweep_report

WIDTH = 1280
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

# Run on load (images included): what a reader would see go wrong, as JSON in a <pre> that --dump-dom prints.
CHECK = """<script>
window.addEventListener("load", () => {
  const page = document.documentElement, width = page.clientWidth, overflow = [];
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect(), style = getComputedStyle(el);
    const what = el.tagName.toLowerCase() + " " + (el.getAttribute("alt") || el.textContent || "").slice(0, 50);
    if (r.width && (r.left < -0.5 || r.right > width + 0.5)) overflow.push(what + " spans " + r.left + ".." + r.right);
    if (style.overflowX !== "visible" && el.scrollWidth > el.clientWidth + 1)
      overflow.push(what + " scrolls: " + el.scrollWidth + " > " + el.clientWidth);
  }
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const out = document.createElement("pre");
  out.id = "dtypelab-check";
  out.textContent = JSON.stringify({width, height: page.scrollHeight, pageWidth: page.scrollWidth,
                                    images: document.images.length, broken, overflow});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = ("chromium is not installed, so the browser check of report.html did NOT run "
               "(apt-get install chromium; `make test` installs it where it can)")
    if os.environ.get("DTYPELAB_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _browse(chromium: str, profile: Path, *args: str) -> str:
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def _check(chromium: str, page: str, directory: Path) -> dict:
    """Load ``page`` (HTML text) with the check script added; what it found."""
    probe = directory / "report.check.html"
    probe.write_text(page.replace("</body>", CHECK + "</body>"))
    dom = _browse(chromium, directory / "profile-check", f"--window-size={WIDTH},900", "--virtual-time-budget=10000",
                  "--dump-dom", probe.as_uri())
    probe.unlink()
    found = re.search(r'<pre id="dtypelab-check">(.*?)</pre>', dom, re.S)
    assert found, f"the check script did not run; the browser printed: {dom[:500]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.browser
def test_the_browser_check_sees_broken_images_and_overflow(tmp_path):
    """The check can fail: an image that does not decode and a table wider than the page are reported."""
    chromium = _chromium()
    wide = "<table><tr>" + "<td>cell-with-text</td>" * 120 + "</tr></table>"
    page = (f'<!DOCTYPE html><html><body><img alt="bad" src="data:image/png;base64,iVBORw0KGgo=">{wide}'
            '<div style="overflow-x:auto;width:300px"><p style="width:900px">scrolled</p></div></body></html>')
    check = _check(chromium, page, tmp_path)
    assert check["broken"] == ["bad"]
    assert any(o.startswith("table") for o in check["overflow"])
    assert any(o.startswith("div") and "scrolls" in o for o in check["overflow"])
    assert check["pageWidth"] > WIDTH


@pytest.mark.browser
def test_the_report_reads_well_in_a_real_browser(tmp_path):
    chromium = _chromium()
    store = synthetic_store(tmp_path / "run")
    _, report = sweep_report.write(store)
    page = report.read_text()
    check = _check(chromium, page, report.parent)
    assert check["images"] == page.count("<img") >= 3
    assert check["broken"] == [], f"images that did not decode: {check['broken']}"
    assert check["overflow"] == [], "elements that overflow the page:\n" + "\n".join(check["overflow"])
    assert check["pageWidth"] <= check["width"] == WIDTH

    shot = report.with_name("report.png")
    _browse(chromium, tmp_path / "profile-shot", f"--window-size={WIDTH},{check['height']}",
            f"--screenshot={shot}", report.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (WIDTH, check["height"])
    keep = os.environ.get("DTYPELAB_KEEP_SCREENSHOT")  # a directory to copy the report and its screenshot to
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for f in (report, shot):
            shutil.copy(f, Path(keep) / f.name)
