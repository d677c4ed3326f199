"""One real service (API + one Celery worker, Redis broker, untrained smile/frown models) shared by the
web-form and batch tests: starting it costs more than most of the tests themselves."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import feqa_stack, untrained_models

MAX_UPLOAD = 5_000_000      # small, so that the form's size check shows without a huge file
EXPRESSIONS = ("smile", "frown")




@pytest.fixture(scope="session")
def web_stack(tmp_path_factory) -> Iterator:
    tmp = tmp_path_factory.mktemp("web-stack")
    models = untrained_models(tmp / "models", EXPRESSIONS)
    with feqa_stack(tmp, model_dir=models, broker="redis", anonymous=False,
                    env={"FEQA_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)}) as stack:
        yield stack
