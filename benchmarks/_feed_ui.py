"""The web UI's load times, measured in a real browser (Debian's chromium with Playwright).

``measure_ui(base_url)`` opens the UI of the server at ``base_url`` in headless chromium and
returns::

    {"ui_first_load_ms": ..., "ui_jobs_page_ms_10k": ..., "ui_jobs_page_nav_ms_10k": ...,
     "ui_jobs_total": ..., "ui_runs": ..., "ui_browser": ...}

- ``ui_first_load_ms``: a fresh browser profile (empty cache) opens ``/ui/`` until the
  dashboard has rendered its data (its counts, chart and nodes): the median over ``runs``.
- ``ui_jobs_page_ms_10k``: a fresh profile opens ``/ui/#/jobs`` until the first page of
  the jobs table (25 rows, sorted by name) has rendered: the median over ``runs``.
- ``ui_jobs_page_nav_ms_10k``: from the dashboard, following the Jobs link until the table
  has rendered (the page's code is cached): the median over ``runs``.

Times are the browser's own (``performance.now()`` of navigation start and of the page's
``trickle-ready:<page>`` mark), so the harness's overhead is not in them. The caller seeds
the jobs: the ``_10k`` keys mean what they say when the server holds 10,000 jobs
(``ui_jobs_total`` reports how many it held). ``measure_ui`` blocks (Playwright's sync API):
call it from a worker thread (``trio.to_thread.run_sync``) when the server runs in the same
process. It needs /usr/bin/chromium (``apt-get install chromium``) and the playwright pip
package, and raises ``RuntimeError`` saying which is missing.

Standalone: ``python benchmarks/_feed_ui.py http://127.0.0.1:8080`` prints the JSON object.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DEFAULT_RUNS = 5
TIMEOUT_MS = 30_000

# ms from navigation start to the page's ready mark, read in the page
_READY_AT = """(name) => {
  const marks = performance.getEntriesByName('trickle-ready:' + name);
  return marks.length ? marks[marks.length - 1].startTime : null;
}"""


def _ready(page: Any, name: str) -> float:
    page.wait_for_selector(f'html[data-ready="{name}"]', timeout=TIMEOUT_MS)
    at = page.evaluate(_READY_AT, name)
    if at is None:
        raise RuntimeError(f"the {name} page rendered without its performance mark")
    return float(at)


def _cold(browser: Any, url: str, ready: str) -> float:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(url, timeout=TIMEOUT_MS)
        return _ready(page, ready)
    finally:
        context.close()


def _navigation(browser: Any, base: str) -> float:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(base + "/ui/", timeout=TIMEOUT_MS)
        _ready(page, "dashboard")
        started = page.evaluate("() => performance.now()")
        page.click('a[data-nav="jobs"]')
        return _ready(page, "jobs") - float(started)
    finally:
        context.close()


def measure_ui(base_url: str, *, runs: int = DEFAULT_RUNS) -> dict[str, Any]:
    """The UI's load times in milliseconds (medians over ``runs``), measured in chromium
    against the server at ``base_url`` (see the module docstring for each key)."""
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise RuntimeError("playwright is missing: pip install playwright") from None
    base = base_url.rstrip("/")
    total = int(
        httpx.get(base + "/v1/jobs", params={"_start": 0, "_end": 0}, timeout=30).headers[
            "X-Total-Count"
        ]
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            _cold(browser, base + "/ui/", "dashboard")  # warm the server's file cache
            first = [_cold(browser, base + "/ui/", "dashboard") for _ in range(runs)]
            jobs = [_cold(browser, base + "/ui/#/jobs", "jobs") for _ in range(runs)]
            nav = [_navigation(browser, base) for _ in range(runs)]
            version = browser.version
        finally:
            browser.close()
    return {
        "ui_first_load_ms": round(statistics.median(first), 1),
        "ui_jobs_page_ms_10k": round(statistics.median(jobs), 1),
        "ui_jobs_page_nav_ms_10k": round(statistics.median(nav), 1),
        "ui_jobs_total": total,
        "ui_runs": runs,
        "ui_browser": f"chromium {version}",
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/_feed_ui.py BASE_URL   (e.g. http://127.0.0.1:8080)")
    print(json.dumps(measure_ui(sys.argv[1])))
