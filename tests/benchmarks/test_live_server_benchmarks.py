"""The benchmarks that run against live servers (service speed, memory) run and write well-formed
JSON (their numbers are read from RESULTS.md, never asserted)."""

import math
import os
import shutil
from pathlib import Path

import pytest

from tests.benchmarks.test_bench_smoke import run_benchmark
from tests.conftest import scene_frames, write_video


@pytest.mark.slow
def test_bench_service_quick_on_a_served_model_of_its_own(tmp_path, tiny_checkpoint):
    result, stdout = run_benchmark(tmp_path, "bench_service.py", "--quick", "--compare-batch1", "--heatmaps", "grid",
                                   "boxes", "--serve-args", f"--model {tiny_checkpoint} --max-batch-size 4")
    rows = ("dynamic", "batch1", "batch1_same_requests", "dynamic_1frame")
    assert all(result[k]["frames_per_s"] > 0 and set(result[k]["codes"]) == {"200"} for k in rows)
    assert result["batch1_same_requests"]["mean_batch_size"] == 1.0
    assert all(0 < result[k]["workers_busy"] <= 1.05 and result[k]["queue_wait_mean_s"] >= 0 for k in rows)
    assert result["batch1_same_requests"]["frames_per_request"] == result["dynamic"]["frames_per_request"] == 8
    assert result["model_level_fps"] > 0  # measured on the served model (gray, 32x48), not the shipped one
    assert result["dynamic_vs_batch1_same_requests"] > 0 and "dynamic_vs_batch1" in stdout
    # the heatmap rows really asked for heatmaps: their responses are larger than the dynamic row's
    grid, boxes = result["heatmap_grid"], result["heatmap_boxes"]
    assert set(grid["codes"]) == set(boxes["codes"]) == {"200"} and result["dynamic"]["heatmap"] == "none"
    none_bytes = result["dynamic"]["response_bytes_per_frame"]
    assert grid["response_bytes_per_frame"] > none_bytes and boxes["response_bytes_per_frame"] > none_bytes
    assert grid["fps_vs_no_heatmap"] > 0 and boxes["heatmap"] == "boxes"
    assert result["dynamic"]["servers"] == 1 and result["dynamic"]["frames_by_server"][0] > 0


@pytest.mark.slow
def test_bench_service_spreads_clients_over_several_servers(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # where the servers' logs go
    (tmp_path / "tmp").mkdir()
    result, _ = run_benchmark(tmp_path, "bench_service.py", "--quick", "--servers", "2",
                              "--serve-args", f"--model {tiny_checkpoint} --max-batch-size 4")
    row = result["dynamic"]
    assert row["servers"] == 2 and set(row["codes"]) == {"200"}
    assert all(n > 0 for n in row["frames_by_server"])  # both processes scored (4 clients: 2 each)
    assert sum(row["frames_by_server"]) >= row["frames_per_s"] * row["seconds"] * 0.9  # all were counted
    assert not list((tmp_path / "tmp").glob("aedmae-serve-*")), "servers that stopped cleanly leave no log behind"


def test_a_benchmark_server_that_fails_keeps_its_log_and_says_where(tmp_path, monkeypatch):
    import subprocess
    import sys

    from tests.benchmarks.test_bench_smoke import ROOT

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    r = subprocess.run([sys.executable, "benchmarks/bench_service.py", "--quick", "--serve-args",
                        f"--model {tmp_path / 'missing'}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    kept = [line.rsplit(" ", 1)[1] for line in r.stderr.splitlines() if "log kept: " in line]
    assert r.returncode != 0 and len(kept) == 1, r.stderr[-2000:]
    assert "no such model file" in Path(kept[0]).read_text() and Path(kept[0]).is_relative_to(tmp_path)


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


def test_a_client_waiting_out_a_429_does_not_hold_up_the_others():
    """bench_service's clients obey Retry-After. Client 0's server refuses everything (Retry-After: 1);
    client 1's answers at once: client 1 must go on sending while client 0 waits (the wait was once
    taken under the lock every client records its answer under, stalling all of them for each 429)."""
    import sys

    from tests.benchmarks.test_bench_smoke import ROOT
    from tests.conftest import QuietHandler, http_server

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_service

    METRICS = b"aedmae_inference_workers 1\n"

    class Answering(QuietHandler):
        status = 200

        def do_GET(self):  # /metrics: one worker, nothing else to sum
            self.send_response(200)
            self.send_header("Content-Length", str(len(METRICS)))
            self.end_headers()
            self.wfile.write(METRICS)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(self.status)
            if self.status == 429:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    class Refusing(Answering):
        status = 429

    with http_server(Refusing) as refusing, http_server(Answering) as answering:
        result = bench_service.load([f"http://127.0.0.1:{s.server_port}" for s in (refusing, answering)], [b"x"],
                                    clients=2, per_request=1, seconds=2.5)
    assert result["codes"][429] <= 3 and result["codes"][200] >= 10 * result["codes"][429], result["codes"]
