"""The memory benchmarks run against a live server and write well-formed JSON (their numbers are read
from RESULTS.md, never asserted)."""

import math
import os
import shutil

import pytest

from tests.benchmarks.test_bench_smoke import run_benchmark
from tests.conftest import scene_frames, write_video


@pytest.mark.slow
def test_soak_samples_memory_descriptors_and_threads_of_a_live_server(tmp_path, tiny_checkpoint):
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "footage" / "avenue_train_10.mp4").exists() and not shutil.which("gst-launch-1.0"):
        if os.environ.get("CI"):
            pytest.fail("no footage and no gst-launch-1.0 to make a clip: scripts/setup.sh installs GStreamer")
        pytest.skip(f"needs {SHARED_DATA / 'footage'} or gst-launch-1.0 (scripts/setup.sh installs it as root)")
    result, stdout = run_benchmark(tmp_path, "soak.py", "--minutes", "0.6", "--interval", "6",
                                   "--serve-args", f"--model {tiny_checkpoint}")
    verdict, samples = result["verdict"], result["samples"]
    assert len(samples) >= 4 and verdict["samples"] == len(samples) and "RSS MB" in stdout
    assert all(s["rss_mb"] > 50 and s["fds"] > 3 and s["threads"] > 3 for s in samples)
    assert verdict["requests"] >= 10 and verdict["live_scored"] > 0  # the HTTP client and the live camera ran
    assert verdict["dead_reconnects"] >= 1 and verdict["dead_state"] != "up"  # the camera that never answers
    assert math.isfinite(verdict["rss_trend_mb_per_hour_second_half"])  # a slope over at least two samples


@pytest.mark.slow
def test_burst_memory_reports_answers_and_peak_memory(tmp_path, tiny_checkpoint):
    result, stdout = run_benchmark(tmp_path, "burst_memory.py", "--clients", "3", "--frames", "7", "--size", "64x48",
                                   "--serve-args", f"--model {tiny_checkpoint}")
    assert result["answers"] == {"200": 3} and result["body_mb"] == 0.1
    assert 50 < result["peak_rss_mb_before"] <= result["peak_rss_mb_after"] and "answers {'200': 3}" in stdout


@pytest.mark.slow
def test_history_memory_reports_bytes_a_record(tmp_path, tiny_checkpoint):
    clip = write_video(tmp_path / "clip.mp4", scene_frames(120, 48, 72, seed=2))
    result, stdout = run_benchmark(tmp_path, "history_memory.py", "--clip", str(clip), "--cameras", "2",
                                   "--rounds", "1", "--serve-args", f"--model {tiny_checkpoint}")
    short, long = result["rows"]
    assert (short["stream_history"], long["stream_history"]) == (10, 120)
    assert short["frames_scored"] == long["frames_scored"] == 240  # every frame of both cameras
    assert (short["records_kept"], long["records_kept"]) == (20, 240)  # what each history holds
    assert "bytes a record" in stdout and isinstance(result["bytes_per_record"], int)
