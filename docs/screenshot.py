"""Screenshot the dashboard of a run, as the README shows it: `python docs/screenshot.py RUN_DIR OUT.png [NODE]`.

Starts `successor dashboard RUN_DIR` on a free port, opens it in Debian's Chromium (Playwright, never
`playwright install`), waits for the plots, opens NODE's details (default: the last promoted successor), saves
a full-page screenshot, and stops the dashboard.
"""
from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright


def main(run_dir: str, out: str, node: str | None = None) -> None:
    if node is None:
        db = sqlite3.connect(f"file:{Path(run_dir) / 'lineage.db'}?mode=ro", uri=True)
        row = db.execute("SELECT candidate_id FROM gate_decisions WHERE promoted=1 ORDER BY generation DESC "
                         "LIMIT 1").fetchone()
        node = row[0] if row else "g0c0"
    dash = subprocess.Popen([sys.executable, "-m", "successor", "dashboard", run_dir, "--port", "0",
                             "--exit-after", "300"], stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"(http://\S+)", dash.stdout.readline()).group(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            expect(page.locator("#audit-badge")).not_to_have_text("audit: checking", timeout=60_000)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not page.locator("img[data-plot]").evaluate_all(
                    "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)"):
                time.sleep(0.5)
            page.click(f".node[data-node='{node}']")
            expect(page.locator("#details-body h2")).to_have_text(re.compile(f"^{node} "))
            page.screenshot(path=out, full_page=True)
            browser.close()
    finally:
        dash.terminate()
        dash.wait(30)
    print(f"wrote {out} ({Path(out).stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:])
