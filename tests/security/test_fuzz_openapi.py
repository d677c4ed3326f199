"""Fuzz the API from its own OpenAPI document (schemathesis) against a real API process: no 5xx, ever.

Given a real API and worker (anonymous use off) and a valid API key, when schemathesis generates requests
for every operation of /openapi.json (valid and schema-violating ones, at most 6 of each per operation,
no shrinking rounds, a 120 s bound), then no answer is a 5xx, every error answer is problem+json with a `code`, and
the API is still healthy afterwards.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from bench.servers import feqa_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_EXAMPLES = 6    # per operation and mode; in practice about 60-100 requests in all (duplicates dropped)


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory, models) -> Iterator[tuple]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with feqa_stack(tmp, model_dir=models, anonymous=False) as stack:
        yield stack, stack.create_key("fuzz-tenant")


MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)   # valid requests, then schema-violating ones
TIME_BUDGET_S = 120.0


def fuzz_operation(operation, mode: GenerationMode, key: str, budget_end: float, log: list) -> None:
    """Up to MAX_EXAMPLES generated requests for one operation; each must avoid 5xx."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        if time.monotonic() > budget_end:
            return   # the wall-clock bound: stop sending, keep what was checked
        response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=20)
        log.append((case.method, operation.path, response.status_code))
        assert response.status_code < 500, (case.method, case.formatted_path, response.status_code,
                                            response.text[:500])
        if response.status_code >= 400 and operation.path != "/readyz":
            ctype = response.headers.get("content-type") or [""]
            ctype = ctype[0] if isinstance(ctype, list) else ctype      # schemathesis keeps a list per header
            assert ctype.startswith("application/problem+json"), response.text
            assert response.json().get("code"), response.text

    run()


@pytest.mark.timeout(200)
def test_no_server_errors(fuzz_stack):
    stack, key = fuzz_stack
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 8, [op.path for op in operations]
    log: list[tuple[str, str, int]] = []
    unsatisfiable: list[str] = []
    budget_end = time.monotonic() + TIME_BUDGET_S
    for operation in operations:
        for mode in MODES:
            try:
                fuzz_operation(operation, mode, key, budget_end, log)
            except Unsatisfiable:
                # Only for NEGATIVE mode on operations whose every input is a free string: the schema
                # admits no invalid request, so there is nothing to send.
                assert mode is GenerationMode.NEGATIVE, operation.path
                unsatisfiable.append(operation.path)
            except Exception as exc:
                raise AssertionError(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}\n"
                                     f"{stack.logs()}") from exc
    statuses = Counter(code for _, _, code in log)
    print(f"fuzz: {len(log)} requests over {len(operations)} operations, statuses {dict(statuses)}; "
          f"no invalid request exists for: {unsatisfiable}")
    assert len(log) >= 40, log                         # the fuzzer really ran
    assert len({path for _, path, _ in log}) == len({op.path for op in operations})
    assert any(400 <= c < 500 for c in statuses)       # and sent requests the API had to refuse


def test_api_healthy_after_fuzzing(fuzz_stack):
    stack, key = fuzz_stack
    with stack.client(key) as http:
        assert http.get("/readyz").status_code == 200
        assert http.get("/v1/models").status_code == 200
    assert all(p.alive() for p in stack.procs), stack.logs()
    logs = "\n".join(p.log.read_text(errors="replace") for p in stack.procs)
    assert "Traceback" not in logs, logs[-4000:]
