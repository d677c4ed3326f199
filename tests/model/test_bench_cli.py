"""Given `feqa bench`, when a topic's module is missing it says so; the model bench's pieces measure."""
from __future__ import annotations

import argparse

from model.bench import matmul_peak
from service import cli_bench


def test_missing_topic_module_reports_not_available(monkeypatch, capsys):
    monkeypatch.setitem(cli_bench.TOPICS, "api", "bench.no_such_module_here")
    assert cli_bench.run(argparse.Namespace(topic="api", rest=[])) == 0
    assert "bench api: not available" in capsys.readouterr().out


def test_model_topic_parses_its_own_options(monkeypatch):
    seen = {}
    monkeypatch.setattr("model.bench.main", lambda args: seen.setdefault("args", args) and 0)
    cli_bench.run(argparse.Namespace(topic="model", rest=["--configs", "compact", "--batches", "1"]))
    assert seen["args"].configs == ["compact"] and seen["args"].batches == [1]


def test_matmul_peak_is_measured():
    assert matmul_peak(1, n=256, reps=1) > 0.1
