"""Pages people read in a browser, opened in a real one: the quickstart's validation report, a
monitor's drift report and the built docs site (its index and a plugin page), in headless Chromium (Debian's `chromium`,
driven by Playwright through `executable_path`). A console error, a failed request or a missing
asset fails the test; each page's screenshot is saved in the test's temp folder.

Needs `chromium` on the PATH (`.ci/run` installs it when missing) and Playwright (the `dev`
extra). CI must have both; elsewhere the tests skip, saying what to install."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        message = "needs Debian's chromium (apt-get install chromium) and playwright (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def served() -> Iterator[Any]:
    """Serve a folder on a free port of 127.0.0.1 (``served(folder) -> base URL``)."""
    servers: list[ThreadingHTTPServer] = []

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    def serve(folder: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def _favicon(url: str) -> bool:
    """The icon a browser asks every site for on its own; a page without one is not broken."""
    return url.split("?")[0].endswith("/favicon.ico")


def _open(browser: Any, url: str, shot: Path) -> Any:
    """Open ``url``; fail on a console error, a failed request or an HTTP error on any asset."""
    page = browser.new_page()
    problems: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error" and not _favicon(str((message.location or {}).get("url", ""))):
            problems.append(f"console error: {message.text} ({message.location})")

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    response = page.goto(url, wait_until="networkidle")
    assert response is not None and response.status == 200, url
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 5_000  # something was drawn
    assert problems == [], problems
    return page


def test_the_quickstart_validation_report(browser: Any, served: Any, tmp_path: Path) -> None:
    project = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", project, ignore=shutil.ignore_patterns(".crispml"))
    recipe = yaml.safe_load((project / "recipe.yaml").read_text())
    only = {k: recipe[k] for k in ("name", "split", "load", "validate")}  # the report, nothing served
    (project / "validate.yaml").write_text(yaml.safe_dump(only, sort_keys=False))
    env = {**os.environ, "CRISPML_PROJECT": str(project)}
    ran = subprocess.run(
        [str(BIN / "crispml"), "run", "validate.yaml"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    reports = list((project / ".crispml" / "runs").glob("*/artifacts/validate/validation.html"))
    assert len(reports) == 1
    base = served(reports[0].parent)
    page = _open(browser, f"{base}/validation.html", tmp_path / "validation.png")
    text = page.inner_text("body")
    assert "churned" in text and "tenure_months" in text  # the columns the suite checks


def test_the_docs_site(browser: Any, served: Any, tmp_path: Path) -> None:
    site = tmp_path / "site"
    built = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    base = served(site)
    index = _open(browser, f"{base}/", tmp_path / "index.png")
    assert "crispml" in index.title()
    nav = index.inner_text(".md-nav--primary")
    assert "Three ways to drive crispml" in nav and "Ready-made recipes" in nav
    plugin = _open(browser, f"{base}/plugins/mlflow/", tmp_path / "mlflow.png")
    assert "mlflow" in plugin.inner_text("article").lower()


def test_a_drift_report(browser: Any, served: Any, tmp_path: Path) -> None:
    """The monitor's ``drift.html`` (Evidently's report, written by the evidently plugin's drift
    engine) on the quickstart's data against a shifted copy: it must render offline — no asset
    from a CDN, no script error — and name the columns it compared."""
    import pandas as pd

    from crispml_evidently._drift import DriftSettings, column_types, detect

    data = pd.read_csv(REPO / "examples" / "quickstart" / "data" / "churn.csv")
    features = [c for c in data.columns if c not in ("churned", "customer_id")]
    reference, current = data.iloc[: len(data) // 2].copy(), data.iloc[len(data) // 2 :].copy()
    current["tenure_months"] = current["tenure_months"] * 3
    numerical, categorical = column_types(reference, features)
    doc = detect(
        reference[features],
        current[features],
        numerical=numerical,
        categorical=categorical,
        settings=DriftSettings(),
        out_dir=tmp_path / "report",
    )
    assert doc["columns"]["tenure_months"]["drifted"] is True
    base = served(tmp_path / "report")
    page = _open(browser, f"{base}/drift.html", tmp_path / "drift.png")
    text = page.inner_text("body")
    assert "tenure_months" in text and "monthly_charges" in text
