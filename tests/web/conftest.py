"""One real service (API + one Celery worker, Redis broker, untrained smile/frown models) shared by the
web-form and batch tests: starting it costs more than most of the tests themselves."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.servers import feqa_stack, untrained_models

MAX_UPLOAD = 5_000_000      # small, so that the form's size check shows without a huge file
EXPRESSIONS = ("smile", "frown")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run",
                 # a synthetic camera, granted without a prompt, for the recording test
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """One headless Chromium for every browser test of the session (starting one costs seconds)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: apt-get install -y chromium (scripts/test.sh does it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def web_stack(tmp_path_factory) -> Iterator:
    tmp = tmp_path_factory.mktemp("web-stack")
    models = untrained_models(tmp / "models", EXPRESSIONS)
    with feqa_stack(tmp, model_dir=models, broker="redis", anonymous=False,
                    # Every browser test signs in from 127.0.0.1 against this one session-wide stack, more often
                    # than the 10 a minute a real address may try on a fast machine; the sign-in limit itself is
                    # tested on its own stack (tests/security/test_misuse.py).
                    env={"FEQA_MAX_UPLOAD_BYTES": str(MAX_UPLOAD), "FEQA_SIGN_IN_PER_MINUTE": "1000"}) as stack:
        yield stack


def open_page(browser, base_url: str, viewport: tuple[int, int]) -> Iterator:
    """A fresh browser context and page; a JavaScript error on the page fails the test that used it."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, base_url=base_url)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture()
def page(request, browser, web_stack) -> Iterator:
    """A page on the session's web stack, 1100 px wide; a test module may set VIEWPORT = (width, height)."""
    yield from open_page(browser, web_stack.base_url, getattr(request.module, "VIEWPORT", (1100, 1000)))


def sign_in(pg, key: str) -> None:
    pg.goto("/")
    pg.fill("#api-key", key)
    pg.press("#api-key", "Enter")
    pg.wait_for_selector("#signed-in:not([hidden])")
