"""`feqa bench throughput --batching --no-e2e` measures the scorer and the dynamic batcher (tiny run)."""
from __future__ import annotations

from bench import throughput


def test_batching_figures_are_measured_for_each_batch_size(tmp_path):
    report = throughput.main(["--batching", "--no-e2e", "--configs", "compact", "--batches", "1,2", "--jobs", "2",
                              "--windows-per-video", "2", "--repeats", "1", "--work-dir", str(tmp_path)])
    (row,) = report["batching"]
    assert row["config"] == "compact" and set(row["ms_per_batch"]) == {1, 2}
    assert all(v > 0 for v in row["ms_per_batch"].values())
    s = row["scoring_videos_per_min"]
    assert s["one_call_per_job"] > 0 and s["dynamic_batching"] > 0
    assert sum(s["batch_sizes"]) >= 2 and max(s["batch_sizes"]) <= 4    # the two jobs' windows, at most together
