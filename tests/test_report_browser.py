"""report.html opened from disk in a real Chromium: every plot shows, nothing errors, and the page asks for
nothing outside itself, so the one file can be mailed or attached and still read in full."""
from __future__ import annotations

from pathlib import Path

from browser import artifact, chromium
from test_report import PLOTS, _copy_run

from successor.reporting.report import write_report


def test_report_html_renders_self_contained_in_chromium(smoke_run: Path, tmp_path: Path):
    run_dir = _copy_run(smoke_run, tmp_path / "run")
    page_path = write_report(run_dir) / "report.html"
    alone = tmp_path / "mailed" / "report.html"  # the page without the PNG files beside it
    alone.parent.mkdir()
    alone.write_bytes(page_path.read_bytes())
    uri = alone.as_uri()
    errors: list[str] = []
    requests: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(uri, wait_until="load")
        images = page.evaluate("() => Array.from(document.images, i => ({alt: i.alt, complete: i.complete, "
                               "w: i.naturalWidth, h: i.naturalHeight}))")
        anchors = page.evaluate("() => Array.from(document.querySelectorAll('a[href]'), a => "
                                "[a.getAttribute('href'), !!document.getElementById(a.hash.slice(1))])")
        headings = page.evaluate("() => Array.from(document.querySelectorAll('h2'), h => h.textContent)")
        page.screenshot(path=str(artifact("report.png")), full_page=True)
        assert errors == [], errors
        page.evaluate("() => console.error('probe')")  # the listener does hear errors
        page.wait_for_timeout(100)
        assert errors == ["console: probe"]
    assert len(images) == len(PLOTS), images
    assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in images), images
    assert anchors and all(href.startswith("#") and found for href, found in anchors), anchors
    assert {"Acceleration", "Lineage"} <= set(headings)
    assert requests and requests[0] == uri  # the listener saw the page itself ...
    assert all(u.startswith(("file:", "data:")) for u in requests), requests  # ... and nothing left the disk
    assert artifact("report.png").stat().st_size > 10_000
