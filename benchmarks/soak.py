"""Does a long-running server leak? Memory, file descriptors and threads of ``aedmae serve`` over time.

    python benchmarks/soak.py [--minutes 25] [--interval 20] [--camera-fps 5] [--serve-args "..."]
        [--json FILE]

Starts ``aedmae serve`` (the shipped model unless --serve-args says otherwise) and a real GStreamer
RTSP server on 127.0.0.1 looping ../shared/data/footage/avenue_train_10.mp4 (every loop ends the
RTSP session, so the camera also goes down and reconnects about once a minute), then for
``--minutes``: one live camera scored at ``--camera-fps``, one camera whose URL never answers
(reconnecting with backoff the whole time), and HTTP clients posting 4-frame JPEG requests with
heatmaps, each under a new ``stream_id`` (contexts pile up until their TTL, then expire), plus a
``/metrics`` scrape per round. Every ``--interval`` seconds it samples the server's resident memory,
open file descriptors and threads, and prints a row. The verdict is the memory trend over the
second half (least squares, MB an hour: the first half includes warm-up, history buffers filling
and contexts reaching their TTL) and the spread of descriptors and threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from bench_service import proc_status, start_server, stop_servers
from bench_streams import FOOTAGE, footage, start_rtsp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.frames import VideoSource, read_frames

DEAD_URL = "rtsp://127.0.0.1:9/never"  # port 9 (discard): connection refused at once


def proc_stats(pid: int) -> dict[str, int]:
    status = proc_status(pid)
    return {"rss_mb": status["VmRSS"] // 1024, "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": status["Threads"]}


def trend_mb_per_hour(samples: list[dict[str, Any]]) -> float:
    """Least-squares slope of resident memory over the second half of the run, MB an hour."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return float("nan")
    t = np.array([s["t_s"] for s in half], float)
    rss = np.array([s["rss_mb"] for s in half], float)
    return float(np.polyfit(t, rss, 1)[0] * 3600)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=25.0)
    p.add_argument("--interval", type=float, default=20.0, help="seconds between samples")
    p.add_argument("--camera-fps", type=float, default=5.0, help="the live camera's scoring rate")
    p.add_argument("--serve-args", default="", help="extra arguments for aedmae serve")
    p.add_argument("--json", help="write the samples and the verdict here")
    args = p.parse_args()
    have_rtsp = subprocess.run(["/usr/bin/python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                               capture_output=True).returncode == 0
    if not have_rtsp:
        sys.exit("needs GStreamer's RTSP server for the system python (scripts/setup.sh installs it)")
    clip = footage(FOOTAGE)
    rtsp, camera_url = start_rtsp(clip)
    server, url = start_server(args.serve_args)
    jpeg = cv2.imencode(".jpg", next(read_frames(VideoSource("clip", clip))))[1].tobytes()
    samples: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            for body in ({"id": "live", "url": camera_url, "fps": args.camera_fps},
                         {"id": "dead", "url": DEAD_URL, "fps": args.camera_fps}):
                r = c.post("/v1/streams", json=body)
                assert r.status_code == 201, r.text
            t0, requests, next_sample = time.monotonic(), 0, 0.0
            print(f"{'t (s)':>6} {'RSS MB':>7} {'fds':>4} {'threads':>7} {'requests':>8} {'live scored':>11} "
                  f"{'live state':>10} {'dead reconnects':>15}", flush=True)
            while (elapsed := time.monotonic() - t0) < args.minutes * 60:
                files = [("frames", (f"{i}.jpg", jpeg, "image/jpeg")) for i in range(4)]
                r = c.post("/v1/score", params={"stream_id": f"soak{requests}", "heatmap": "png"}, files=files)
                assert r.status_code == 200, r.text
                requests += 1
                if elapsed >= next_sample:
                    c.get("/metrics")
                    live, dead = c.get("/v1/streams/live").json(), c.get("/v1/streams/dead").json()
                    row = {"t_s": round(elapsed, 1), **proc_stats(server.pid), "requests": requests,
                           "live_scored": live["frames"]["scored"], "live_state": live["state"],
                           "dead_reconnects": dead["reconnects"], "dead_state": dead["state"]}
                    samples.append(row)
                    print(f"{row['t_s']:>6.0f} {row['rss_mb']:>7} {row['fds']:>4} {row['threads']:>7} "
                          f"{requests:>8} {row['live_scored']:>11} {row['live_state']:>10} "
                          f"{row['dead_reconnects']:>15}", flush=True)
                    next_sample += args.interval
                time.sleep(1.0)
    finally:
        rtsp.terminate()
        stop_servers([(server, url)])
    verdict = {
        "minutes": args.minutes, "samples": len(samples),
        "rss_mb_first": samples[0]["rss_mb"], "rss_mb_last": samples[-1]["rss_mb"],
        "rss_trend_mb_per_hour_second_half": round(trend_mb_per_hour(samples), 1),
        "fds_min_max": [min(s["fds"] for s in samples), max(s["fds"] for s in samples)],
        "threads_min_max": [min(s["threads"] for s in samples), max(s["threads"] for s in samples)],
        "requests": samples[-1]["requests"], "live_scored": samples[-1]["live_scored"],
        "dead_reconnects": samples[-1]["dead_reconnects"], "dead_state": samples[-1]["dead_state"],
    }
    print(json.dumps(verdict, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"verdict": verdict, "samples": samples, "serve_args": args.serve_args}, f, indent=1)


if __name__ == "__main__":
    main()
