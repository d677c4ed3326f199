"""Fixtures for the security and bad-input tests: the same real-process fixtures as the fault tests
(untrained models exported once per session, the real face clip)."""
from tests.faults.conftest import models, video  # noqa: F401  (pytest fixtures, shared)
