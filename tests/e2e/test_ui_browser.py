"""The web UI at /ui/: its files over HTTP, and its pages in a real browser.

The browser tests drive Debian's chromium (/usr/bin/chromium) with Playwright's sync API in a
worker thread (``trio.to_thread``), against a real app served on port 0 by this test's
nursery. They skip, saying why, when chromium or playwright is missing, unless ``CI`` is
set: in CI they must run, so a missing browser fails them. A failing browser test saves a
screenshot under its pytest tmp dir and prints the path.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trickle import Engine, EngineConfig, EventKind
from trickle.http.app import create_agent_app, serve_http

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
UI_BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "_feed_ui.py"
TIMEOUT_MS = 15_000  # any single wait in the browser
COUNTER = "for i in 1 2 3; do echo $i; sleep 1; done"  # prints 1, 2, 3 a second apart


def _browser_missing() -> str | None:
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def browser_ready() -> None:
    """Skip (locally) or fail (in CI) when the browser cannot be driven."""
    missing = _browser_missing()
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests, but {missing}")
    pytest.skip(f"browser tests need chromium and playwright: {missing}")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Engine]]:
    engine = Engine(EngineConfig(data_dir=tmp_path / "data", node_name="ui-node"))
    async with engine, trio.open_nursery() as nursery:
        [url] = await nursery.start(functools.partial(serve_http, engine, port=0))
        yield url, engine
        nursery.cancel_scope.cancel()


def _drive(script: Callable[..., Any], base: str, shots: Path, width: int, **kwargs: Any) -> Any:
    """Run ``script(page, base, **kwargs)`` in a fresh chromium page (blocking: call it in a
    worker thread). Page errors fail the script; a failure saves a screenshot."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": 800})
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

            def console(msg: Any) -> None:
                # a refused request the UI handles (a 404 or 400) logs "Failed to load"
                if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
                    problems.append(f"console error: {msg.text}")

            page.on("console", console)
            try:
                result = script(page, base, **kwargs)
                assert not problems, problems
                return result
            except BaseException:
                shots.mkdir(parents=True, exist_ok=True)
                path = shots / f"{script.__name__}-failure.png"
                try:
                    page.screenshot(path=str(path), full_page=True)
                    print(f"screenshot of the failure: {path}")
                except Exception:
                    print(f"no screenshot: {traceback.format_exc(limit=1)}")
                print("browser problems:", problems)
                raise
        finally:
            browser.close()


async def in_browser(
    script: Callable[..., Any], base: str, tmp_path: Path, *, width: int = 1280, **kwargs: Any
) -> Any:
    return await trio.to_thread.run_sync(
        functools.partial(_drive, script, base, tmp_path / "screenshots", width, **kwargs)
    )


def _ready(page: Any, name: str) -> None:
    page.wait_for_selector(f'html[data-ready="{name}"]')


def _api(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=10)


# -- the files -------------------------------------------------------------------------


async def test_ui_files_are_served_with_types_and_revalidation(served):
    url, _ = served
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/ui")
        assert r.status_code == 308 and r.headers["location"] == "/ui/"
        r = await client.get("/ui/")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "no-cache" in r.headers["cache-control"]
        assert "script-src 'self'" in r.headers["content-security-policy"]
        r = await client.get("/ui/js/app.js")
        assert r.headers["content-type"].startswith("text/javascript")
        again = await client.get("/ui/js/app.js", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        css = await client.get("/ui/app.css")
        assert css.headers["content-type"].startswith("text/css")
        for bad in ("/ui/missing.js", "/ui/../app.py", "/ui/%2e%2e/http/app.py", "/ui/js"):
            assert (await client.get(bad)).status_code == 404, bad


async def test_root_redirects_browsers_to_the_ui_and_answers_api_clients_as_before(served):
    url, _ = served
    async with httpx.AsyncClient(base_url=url) as client:
        page = await client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert page.status_code == 303 and page.headers["location"] == "/ui/"
        api = await client.get("/", headers={"Accept": "application/json"})
        assert api.status_code == 404 and api.json()["error"] == "404 page not found"


async def test_an_agent_serves_no_ui(tmp_path):
    engine = Engine(EngineConfig(data_dir=tmp_path / "agent", node_name="agent-1", server=False))
    app = create_agent_app(engine)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/ui/")).status_code == 404
        assert (await client.get("/ui/js/app.js")).status_code == 404


# -- the pages in a browser ------------------------------------------------------------


def _create_edit_toggle_delete(page: Any, base: str) -> None:
    page.goto(base + "/ui/#/new")
    _ready(page, "new")
    page.get_by_label("Name", exact=True).fill("ui-made")
    page.get_by_label("Schedule", exact=True).fill("@every 1h")
    page.get_by_label("Executor config (JSON object)").fill('{"command": "echo made"}')
    page.wait_for_function(
        "() => document.querySelectorAll('#schedule-preview li').length === 5"
    )  # the next five fires, as typed
    # the server's validation error, beside the field it names
    page.get_by_label("Time zone").fill("Mars/Olympus_Mons")
    error = page.locator("#f-timezone-error")
    # the preview says it first, as typed
    page.wait_for_function(
        "() => document.querySelector('#f-timezone-error').textContent.includes('Olympus')"
    )
    page.get_by_role("button", name="Create job").click()
    # then the server refuses the save
    page.wait_for_function(
        "() => document.querySelector('#f-timezone-error').textContent"
        ".startsWith('Job validation failed')"
    )
    assert "Mars/Olympus_Mons" in error.inner_text()
    assert page.get_by_label("Time zone").get_attribute("aria-invalid") == "true"
    with _api(base) as api:
        assert api.get("/v1/jobs/ui-made").status_code == 404
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_role("button", name="Create job").click()
    page.wait_for_url("**/ui/#/jobs/ui-made")
    _ready(page, "job")
    with _api(base) as api:
        made = api.get("/v1/jobs/ui-made").json()
    assert made["timezone"] == "Europe/Berlin"
    assert made["executor_config"] == {"command": "echo made"}

    # find it in the list
    page.goto(base + "/ui/#/jobs")
    _ready(page, "jobs")
    page.get_by_label("Search").fill("ui-ma")
    page.wait_for_function(
        "() => location.hash.includes('q=ui-ma') && !document.querySelector('#jobs-box[aria-busy]')"
    )
    row = page.locator('tr[data-job="ui-made"]')
    row.wait_for()
    page.wait_for_function("() => document.querySelectorAll('#jobs-table tbody tr').length === 1")

    # toggle from the list (bulk), then back from the job page
    row.get_by_label("Select ui-made").check()
    page.get_by_role("toolbar", name="Actions on the selected jobs").get_by_role(
        "button", name="Toggle"
    ).click()
    row.locator(".badge-disabled").wait_for()
    with _api(base) as api:
        assert api.get("/v1/jobs/ui-made").json()["disabled"] is True
    row.get_by_role("link", name="ui-made", exact=True).click()
    _ready(page, "job")
    page.get_by_role("button", name="Enable").click()
    page.get_by_role("button", name="Disable").wait_for()
    with _api(base) as api:
        assert api.get("/v1/jobs/ui-made").json()["disabled"] is False

    # edit
    page.get_by_role("link", name="Edit").click()
    _ready(page, "edit")
    assert page.get_by_label("Name", exact=True).input_value() == "ui-made"
    page.get_by_label("Display name").fill("Made in the UI")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/ui/#/jobs/ui-made")
    page.get_by_role("heading", name="Made in the UI").wait_for()
    with _api(base) as api:
        edited = api.get("/v1/jobs/ui-made").json()
    assert edited["displayname"] == "Made in the UI"
    assert edited["timezone"] == "Europe/Berlin"  # the rest kept

    # delete
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url("**/ui/#/jobs")
    with _api(base) as api:
        assert api.get("/v1/jobs/ui-made").status_code == 404

    # bulk run and bulk delete of a whole page
    with _api(base) as api:
        for name in ("bulk-a", "bulk-b"):
            job = {"name": name, "schedule": "@manually", "executor": "shell"}
            job["executor_config"] = {"command": "echo bulk"}
            assert api.post("/v1/jobs", json=job).status_code == 201
    page.goto(base + "/ui/#/jobs?q=bulk-")
    _ready(page, "jobs")
    page.wait_for_function("() => document.querySelectorAll('#jobs-table tbody tr').length === 2")
    page.get_by_label("Select every job on this page").check()
    bulk = page.get_by_role("toolbar", name="Actions on the selected jobs")
    bulk.get_by_role("button", name="Run").click()
    page.locator("#announce", has_text="Started 2 of 2 jobs.").wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#jobs-table tbody tr')]"
        ".every(r => r.querySelector('.badge-success'))"
    )  # both ran (the list follows the feed)
    page.get_by_label("Select every job on this page").check()
    page.once("dialog", lambda dialog: dialog.accept())
    bulk.get_by_role("button", name="Delete").click()
    page.get_by_text("No job matches these filters.").wait_for()
    with _api(base) as api:
        assert api.get("/v1/jobs", params={"q": "bulk-"}).json() == []


@pytest.mark.browser
async def test_create_find_toggle_edit_and_delete_a_job_through_the_ui(
    browser_ready, served, tmp_path
):
    url, _ = served
    await in_browser(_create_edit_toggle_delete, url, tmp_path)


def _live_output(page: Any, base: str) -> None:
    page.goto(base + "/ui/#/jobs/counter")
    _ready(page, "job")
    page.get_by_role("button", name="Run now").click()
    shown = "document.querySelector('tr.exec-detail pre')"
    status = "document.querySelector('tr.exec').dataset.status"
    # each line while the run is still running, then the finish
    for text in ("1\\n", "1\\n2\\n"):
        page.wait_for_function(
            f"() => {shown} && {shown}.textContent === '{text}' && {status} === 'running'"
        )
    page.wait_for_function(f"() => {shown}.textContent === '1\\n2\\n3\\n'")
    page.wait_for_function(f"() => {status} === 'success'")
    assert page.locator("tr.exec td.status").inner_text().strip() == "success"


@pytest.mark.browser
async def test_a_running_jobs_output_appears_line_by_line_before_it_finishes(
    browser_ready, served, tmp_path
):
    url, engine = served
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.post(
            "/v1/jobs",
            json={
                "name": "counter",
                "schedule": "@manually",
                "executor": "shell",
                "executor_config": {"command": COUNTER, "shell": "true"},
            },
        )
        assert r.status_code == 201
    await in_browser(_live_output, url, tmp_path)


def _busy_joins_a_running_execution(page: Any, base: str, gates: Path) -> None:
    # the run printed its first line before this page opened, and waits for gate 1
    page.goto(base + "/ui/#/busy")
    _ready(page, "busy")
    card = page.locator('article[data-job="gated"]')
    card.wait_for()
    pre = "document.querySelector('article[data-job=\"gated\"] pre')"
    page.wait_for_function(f"() => {pre}.textContent === '1\\n'")  # /v1/busy's output so far
    # then the chunks as printed: none lost or repeated
    (gates / "1").touch()
    page.wait_for_function(f"() => {pre}.textContent === '1\\n2\\n'")
    assert card.locator(".badge-running").count() == 1
    (gates / "2").touch()
    page.wait_for_function(f"() => {pre}.textContent === '1\\n2\\n3\\n'")
    card.locator(".badge-success").wait_for()


@pytest.mark.browser
async def test_the_busy_page_shows_a_run_started_earlier_with_its_output_so_far(
    browser_ready, served, tmp_path
):
    url, engine = served
    gates = tmp_path / "gates"
    gates.mkdir()
    wait = "while [ ! -e {0} ]; do sleep 0.05; done"
    command = "; ".join(
        ["echo 1", wait.format(gates / "1"), "echo 2", wait.format(gates / "2"), "echo 3"]
    )
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.post(
            "/v1/jobs",
            json={
                "name": "gated",
                "schedule": "@manually",
                "executor": "shell",
                "executor_config": {"command": command, "shell": "true", "timeout": "60s"},
            },
        )
        assert r.status_code == 201
        with engine.subscribe(kinds=[EventKind.EXECUTION_OUTPUT], jobs=["gated"]) as sub:
            await client.post("/v1/jobs/gated/run")
            async for _ in sub:  # the first line is out
                break
    try:
        await in_browser(_busy_joins_a_running_execution, url, tmp_path, gates=gates)
    finally:
        for gate in ("1", "2"):
            (gates / gate).touch()  # the run ends whatever happened


def _dashboard_and_members(page: Any, base: str) -> dict[str, Any]:
    page.goto(base + "/")  # a browser at / lands on the UI
    page.wait_for_url("**/ui/")
    _ready(page, "dashboard")
    found = {
        "leader": page.get_by_test_id("leader").inner_text(),
        "jobs": page.locator('[data-count="all"] .card-value').inner_text(),
        "failed": page.locator('[data-count="failed"] .card-value').inner_text(),
        "bars": page.locator("svg.chart g.bar").count(),
        "chart_label": page.locator("#chart-desc").text_content(),
        "node_rows": page.locator("tr[data-member]").count(),
    }
    page.get_by_role("link", name="Members").click()
    _ready(page, "members")
    row = page.locator('tr[data-member="ui-node"]')
    found["member_leader_badge"] = row.locator(".badge-leader").inner_text()
    found["member_status"] = row.locator(".badge-member-alive").inner_text()
    found["member_tags"] = row.locator(".tag").all_inner_texts()
    # output is text, never HTML
    page.goto(base + "/ui/#/jobs/ok")
    _ready(page, "job")
    page.locator("tr.exec").get_by_role("button", name="Show").click()
    found["output"] = page.locator("tr.exec-detail pre").text_content()
    found["injected"] = page.locator("#injected").count()
    # the keyboard alone: the skip link, then a sortable column header by Tab and Enter
    page.goto(base + "/ui/#/jobs")
    page.reload()  # a first load: the skip link comes first
    _ready(page, "jobs")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.tagName") == "H1"
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.dataset.sort") == "name":
            break
    else:
        raise AssertionError("Tab never reached the Name column's sort button")
    page.keyboard.press("Enter")
    page.wait_for_selector('th[aria-sort="descending"] [data-sort="name"]')
    found["sorted"] = page.locator("#jobs-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.job)"
    )
    found["focus_kept"] = page.evaluate("() => document.activeElement.dataset.sort")
    return found


@pytest.mark.browser
async def test_the_dashboard_and_members_pages_render(browser_ready, served, tmp_path):
    url, engine = served
    async with httpx.AsyncClient(base_url=url) as client:
        for name, command in (
            ("ok", "echo '<b id=injected>bold</b>'"),
            ("bad", "false"),
            ("idle", "true"),
        ):
            await client.post(
                "/v1/jobs",
                json={
                    "name": name,
                    "schedule": "@manually",
                    "executor": "shell",
                    "executor_config": {"command": command},
                },
            )
        with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED]) as sub:
            await client.post("/v1/jobs/ok/run")
            await client.post("/v1/jobs/bad/run")
            finished = 0
            async for _ in sub:
                finished += 1
                if finished == 2:
                    break
    found = await in_browser(_dashboard_and_members, url, tmp_path)
    assert found["leader"] == "ui-node"
    assert found["jobs"] == "3"
    assert found["failed"] == "1"
    assert found["bars"] == 30
    assert "1 successful and 1 failed" in found["chart_label"]
    assert found["node_rows"] == 1
    assert found["member_leader_badge"] == "leader"
    assert found["member_status"] == "alive"
    assert "server=true" in found["member_tags"]
    assert found["output"] == "<b id=injected>bold</b>\n"
    assert found["injected"] == 0
    assert found["sorted"] == ["ok", "idle", "bad"]
    assert found["focus_kept"] == "name"


def _fits_a_phone(page: Any, base: str) -> dict[str, int]:
    widths = {}
    for route, ready in (
        ("/", "dashboard"),
        ("/jobs", "jobs"),
        ("/jobs/wide", "job"),
        ("/new", "new"),
        ("/members", "members"),
        ("/busy", "busy"),
    ):
        page.goto(base + "/ui/#" + route)
        _ready(page, ready)
        widths[route] = page.evaluate("document.documentElement.scrollWidth")
    return widths


@pytest.mark.browser
async def test_every_page_fits_a_375_pixel_wide_screen(browser_ready, served, tmp_path):
    url, _ = served
    async with httpx.AsyncClient(base_url=url) as client:
        await client.post(
            "/v1/jobs",
            json={
                "name": "wide",
                "displayname": "A job with a rather long display name to wrap",
                "schedule": "0 30 2 * * *",
                "executor": "shell",
                "executor_config": {"command": "echo " + "x" * 200},
                "metadata": {"k": json.dumps(list(range(40)))},
            },
        )
    widths = await in_browser(_fits_a_phone, url, tmp_path, width=375)
    assert all(w <= 375 for w in widths.values()), widths


@pytest.mark.browser
async def test_the_ui_benchmark_measures_both_page_loads(browser_ready, served):
    url, _ = served
    spec = importlib.util.spec_from_file_location("_feed_ui", UI_BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = await trio.to_thread.run_sync(functools.partial(module.measure_ui, url, runs=1))
    for key in ("ui_first_load_ms", "ui_jobs_page_ms_10k", "ui_jobs_page_nav_ms_10k"):
        assert result[key] > 0, result
    assert result["ui_jobs_total"] == 0
    json.dumps(result)
