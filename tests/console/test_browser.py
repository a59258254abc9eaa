"""Operator flows in a real browser: Debian's Chromium, headless, driven by Playwright,
against a real Chatter (uvicorn and a django-q2 cluster on the test database).

One browser, one login, the flows in sequence: create an agent, upload a document and
watch it process, chat with streaming, branch, run an export and download it, retry a
dead job, read the dashboard. Screenshots go to <data dir>/test-artifacts/browser/ (the
path is printed). Without Chromium or Playwright the module skips, saying why."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils import timezone

from jobs.models import Job
from tests.servers import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "Chromium is not installed (apt-get install chromium): the browser flows are skipped",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: the browser flows are skipped"
)

PASSWORD = "operator-password-1"
NOTES = (
    "Chatter keeps every conversation in PostgreSQL. The retention policy of the archive "
    "team deletes drafts after ninety days, and the operators review it each quarter.\n"
) * 3


@pytest.fixture(scope="module")
def artifacts() -> Path:
    from django.conf import settings

    path = Path(settings.DATA_DIR) / "test-artifacts" / "browser"
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def chatter(django_db_setup: None, django_db_blocker: Any, artifacts: Path) -> Iterator[str]:
    """A uvicorn server and a job cluster of Chatter on the test database."""
    from django.conf import settings
    from django.db import connection

    with django_db_blocker.unblock():
        database = connection.settings_dict["NAME"]
    port = free_port()
    env = {
        **os.environ,
        "CHATTER_DATA_DIR": str(settings.DATA_DIR),
        "CHATTER_DB_NAME": database,
        "CHATTER_JOBS_HANDLER_MODULES": "tests.jobs.handlers",
        "CHATTER_RATE_LIMIT": "100000/m",
        "CHATTER_RATE_LIMIT_EXPENSIVE": "100000/m",
        "CHATTER_WORKERS": "2",
        "LOG_LEVEL": "WARNING",
    }
    logs = {name: (artifacts / f"{name}.log").open("w") for name in ("server", "workers")}
    processes = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "chatter_project.asgi:application"),
                *("--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"),
                "--no-access-log",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=logs["server"],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
        subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=logs["workers"],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a generous wait for start-up, not a speed claim
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert processes[0].poll() is None, (artifacts / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "uvicorn did not come up"
            time.sleep(0.2)
        yield base
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in logs.values():
            log.close()


def _reload_until(page: Any, selector: str, text: str, *, timeout: float = 90) -> None:
    """Reload until ``selector`` shows ``text`` (background work the page cannot push)."""
    deadline = time.monotonic() + timeout
    while True:
        found = page.locator(selector)
        if found.count() and text in found.first.inner_text():
            return
        assert time.monotonic() < deadline, f"{selector} never showed {text!r}"
        page.wait_for_timeout(500)
        page.reload()


@pytest.mark.django_db(transaction=True)
def test_an_operator_runs_chatter_from_the_browser(
    chatter: str, artifacts: Path, make_user: Any
) -> None:
    operator = make_user("operator", staff=True, password=PASSWORD)
    now = timezone.now()
    dead = Job.objects.create(
        handler="test.record",
        args={"n": 1},
        status="dead",
        attempts=3,
        error="it failed three times",
        available_at=now,
        rank_at=now,
        finished_at=now,
    )
    # Playwright's sync API runs an event loop in this thread, where Django refuses ORM
    # calls: the rows above are written first, the browser starts after.
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            _flows(browser, chatter, artifacts, operator.username, dead.pk)
        finally:
            browser.close()


def _flows(browser: Any, chatter: str, artifacts: Path, username: str, dead_job: int) -> None:
    context = browser.new_context(base_url=chatter, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def shot(name: str) -> None:
        page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)

    # Log in.
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector(".console-dashboard")
    shot("01-logged-in")

    # Create an agent.
    page.goto("/admin/agents/agent/add/")
    page.fill("#id_name", "Archivist")
    page.fill("#id_slug", "archivist")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    shot("02-agent-created")

    # Upload a document and watch it process.
    page.goto("/admin/console/operations/")
    page.set_input_files(
        "#upload-file",
        files=[{"name": "retention.txt", "mimeType": "text/plain", "buffer": NOTES.encode()}],
    )
    page.fill("#upload-title", "Retention notes")
    page.click("#upload-form input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    _reload_until(page, ".field-status .readonly", "Processed")
    shot("03-document-processed")

    # Chat with streaming.
    page.goto("/admin/console/chat/")
    agent = page.locator("#chat-agent option", has_text="(archivist)").get_attribute("value")
    page.select_option("#chat-agent", agent)
    page.click(".chat-new input[type=submit]")
    page.wait_for_selector("#chat-input")
    page.fill("#chat-input", "What does the retention policy of the archive team say?")
    page.press("#chat-input", "Enter")
    # (No wait_for_function: the page's CSP forbids evaluating strings, as it should.)
    page.locator("#chat-status", has_text="Done").wait_for()
    page.wait_for_selector(".chat-message.assistant[data-message-id]")
    assert int(page.get_attribute("#chat-log", "data-deltas")) > 1  # it came in pieces
    reply = page.locator(".chat-message.assistant .chat-content").last.inner_text()
    assert reply.strip()
    shot("04-chat-streamed")

    # Branch from a message.
    chat_url = page.url
    page.locator(".chat-message.assistant .chat-branch").first.click()
    page.wait_for_url(lambda url: url != chat_url and "/admin/console/chat/" in url)
    page.wait_for_selector("text=branched from")
    assert page.locator(".chat-message").count() >= 2  # the shared history came along
    shot("05-branched")

    # Run an export and download it.
    page.goto("/admin/console/operations/")
    page.select_option("#export-format", "json")
    page.click("#export-form input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    _reload_until(page, ".export-status", "succeeded")
    with page.expect_download() as download_info:
        page.click(".export-download")
    saved = artifacts / "export.json"
    download_info.value.save_as(saved)
    exported = json.loads(saved.read_text())
    assert "Operator chat with Archivist" in json.dumps(exported)
    shot("06-exported")

    # Retry a dead job.
    page.goto(f"/admin/jobs/job/{dead_job}/change/")
    page.click("input[name=_retry_job]")
    page.wait_for_selector(".messagelist .success")
    _reload_until(page, ".field-status .readonly", "Succeeded")
    shot("07-job-retried")

    # Read the dashboard.
    page.goto("/admin/")
    for plot in ("usage-messages", "usage-models", "jobs-backlog", "knowledge-documents"):
        assert page.locator(f"svg.console-plot.{plot}").is_visible()
    assert "1 processed" in page.locator("svg.knowledge-documents").inner_html()
    page.locator("svg.knowledge-documents a", has_text="Processed").click()  # opens its list
    page.wait_for_selector("#result_list")
    assert "Retention notes" in page.locator("#result_list").inner_text()
    page.goto("/admin/")
    shot("08-dashboard")

    assert errors == []  # no script error on any page
    context.close()
