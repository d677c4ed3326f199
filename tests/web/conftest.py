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
