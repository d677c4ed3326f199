"""The extraction benchmark runs and reports its numbers (small settings; the real run uses the 720p clip)."""
from __future__ import annotations

from tests.worker.conftest import SINGLE_FACE
from worker import bench


def test_bench_main_with_argv_list():
    res = bench.main(["--video", str(SINGLE_FACE), "--frames", "20", "--jitter-steps", "6", "--overlap-reps", "1"])
    t = res["tracking_1280x720"]
    assert t["size"] == "1280x720" and t["frames"] == 20 and t["face_found_share"] == 1.0
    assert t["tracking_fps"] > 0 and t["tracking_fps_per_cpu_s"] > 0
    assert res["decode"]["kept_frames"] == 60 and res["extraction"]["extract_s"] > 0
    assert res["jitter"]["n"] == 6 and 0 < res["jitter"]["jitter_iod_mean"] < 0.05
    assert set(res["targets"]) >= {"jitter<=1%iod", "tracking_fps>=150 (per CPU second)"}
    ov = res["overlap"]
    assert ov["reps"] == 1 and ov["extraction"]["wall_min_s"] > 0 and ov["extract_over_floor_min"] > 0
    assert ov["extraction_threads_cpu_s"]["main_thread_cpu_s"] > 0
    assert 0 < ov["frame_work"]["cpu_min_s"] <= ov["frame_work"]["cpu_median_s"]
