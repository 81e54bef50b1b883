"""How many live 25 fps cameras one machine scores in real time.

    python benchmarks/bench_streams.py [--fps 25 10 5] [--max-cameras 16] [--seconds 20]
        [--source rtsp|file] [--clip FILE.mp4] [--serve-args "..."] [--json FILE] [--quick]

Starts ``aedmae serve`` (the shipped model unless --serve-args says otherwise) and a real GStreamer
RTSP server on 127.0.0.1 (tests/streams/rtsp_server.py, run by the system python) that streams
../shared/data/footage/avenue_train_10.mp4 (640x360, 25 fps, H.264) in real time, or a generated
clip without ../shared. For each scoring rate (the camera's ``fps``: every frame at 25, or sampled
down), it registers 1, 2, 4, ... cameras on that server (doubling, then bisecting) and measures,
after a warm-up, each camera's scored fps, drops and the capture-to-score frame age over
``--seconds``. A count is "real time" when no frame was dropped, every camera scored >= 95% of its
target fps and the frame age p99 stayed within the look-ahead + 1 s; the table gives the largest
such count per rate and the frame age p50/p99 there.
The frame age includes the 3-frame look-ahead (frame t is scored once t+3 is captured: 3/fps
seconds), reported beside it.

``--source file`` (the default where GStreamer's RTSP server is missing, e.g. a GPU machine without
apt) registers the same mp4 as ``realtime`` file cameras instead: the same decoding and pacing,
without the RTSP transport.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_service import add_gil_per_frame, free_port, profile_server, start_server, stop_servers

ROOT = Path(__file__).resolve().parents[1]
FOOTAGE = ROOT.parent / "shared" / "data" / "footage" / "avenue_train_10.mp4"
RTSP_SERVER = ROOT / "tests" / "streams" / "rtsp_server.py"
LAG_BUDGET_S = 1.0  # real time: frame age p99 within the look-ahead + this (the default staleness budget)


def footage(clip: Path = FOOTAGE) -> Path:
    if clip.exists():
        return clip
    print(f"note: {clip} not found; generating a 60 s test-pattern clip", file=sys.stderr)
    out = Path(tempfile.mkdtemp()) / "clip.mp4"
    subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=1500", "!",
                    "video/x-raw,width=640,height=360,framerate=25/1", "!", "x264enc", "!", "h264parse", "!",
                    "mp4mux", "!", "filesink", f"location={out}"], check=True)
    return out


def start_rtsp(clip: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(["/usr/bin/python3", str(RTSP_SERVER), str(port), str(clip)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", "RTSP server did not start"
    return proc, f"rtsp://127.0.0.1:{port}/cam"


def trial(url: str, source: str, cameras: int, fps: float, warmup: float, seconds: float) -> dict[str, Any]:
    """Register ``cameras`` cameras, measure over ``seconds`` after ``warmup``, remove them."""
    ids = [f"bench{i}" for i in range(cameras)]
    with httpx.Client(base_url=url, timeout=30) as c:
        for sid in ids:
            body = {"id": sid, "url": source, "fps": fps, "stall_timeout_s": 5,
                    "realtime": "://" not in source}
            assert c.post("/v1/streams", json=body).status_code == 201
        time.sleep(warmup)

        def read_all() -> dict[str, tuple[float, dict[str, Any]]]:  # each camera's counters, and when read
            return {sid: (time.monotonic(), c.get(f"/v1/streams/{sid}").json()) for sid in ids}

        before = read_all()
        t0 = time.time()
        time.sleep(seconds)
        after = read_all()
        t1 = time.time()
        # The ages of the frames scored in the window (scored at capture time + age), not of those captured
        # in it: a server that lags by more than the window scores only frames captured before it.
        ages = [s["frame_age_s"] for sid in ids
                for s in c.get(f"/v1/streams/{sid}/scores", params={"limit": 10000}).json()["scores"]
                if t0 <= s["capture_time"] + s["frame_age_s"] <= t1]
        for sid in ids:
            c.delete(f"/v1/streams/{sid}")
    per_camera = []
    for sid in ids:  # rates over each camera's own interval: reading 64 cameras can take seconds when loaded
        (tb, b), (ta, a) = before[sid], after[sid]
        b, a, span = b["frames"], a["frames"], ta - tb
        per_camera.append({
            "state": after[sid][1]["state"],
            "scored_fps": (a["scored"] - b["scored"]) / span,
            "received_fps": (a["received"] - b["received"]) / span,
            "dropped": {k: v - b["dropped"].get(k, 0) for k, v in a["dropped"].items()},
            "span_s": span,
        })
    p99 = float(np.percentile(ages, 99)) if ages else float("inf")
    realtime = p99 <= 3 / fps + LAG_BUDGET_S and all(
        p["state"] in ("up", "ended") and not any(p["dropped"].values()) and p["scored_fps"] >= 0.95 * fps
        for p in per_camera)
    dropped = {k: sum(p["dropped"][k] for p in per_camera) for k in per_camera[0]["dropped"]} if per_camera else {}
    return {
        "cameras": cameras, "fps": fps, "realtime": realtime, "lookahead_s": round(3 / fps, 3),
        "scored_fps_total": round(sum(p["scored_fps"] for p in per_camera), 2),
        "min_camera_scored_fps": round(min(p["scored_fps"] for p in per_camera), 2),
        "dropped": sum(dropped.values()), "dropped_by_reason": {k: v for k, v in dropped.items() if v},
        "states": sorted({p["state"] for p in per_camera}),
        "window_s": {"nominal": seconds, "longest": round(max(p["span_s"] for p in per_camera), 2)},
        "frame_age_p50_s": round(float(np.percentile(ages, 50)), 3) if ages else None,
        "frame_age_p99_s": round(float(np.percentile(ages, 99)), 3) if ages else None,
    }


def report_profile(profile: dict[str, Any], row: dict[str, Any]) -> None:
    """The GIL held per scored frame (what bounds the Python side), printed with the top holders."""
    add_gil_per_frame(profile, row["scored_fps_total"])
    top = profile.get("gil", {}).get("top_self", [])[:8]
    print(f"  profile of {row['cameras']} camera(s): GIL held {profile.get('gil_held_share')} of the time, "
          f"{profile.get('gil_ms_per_frame')} ms a scored frame; held most in {top}", flush=True)


def search(run: Any, most: int, time_left: Any = lambda: True,
           start: int = 1) -> tuple[dict[str, Any] | None, int | None, bool]:
    """The largest camera count in 1..most that runs in real time: double from ``start`` until one
    fails, then bisect (assumes more cameras never make it easier). Returns (the best real-time trial or
    None, the smallest count seen failing or None, whether the search finished before ``time_left()``
    said no)."""
    best, failed, n = None, None, max(1, min(start, most))
    while n <= most:
        if not time_left():
            return best, failed, False
        row = run(n)
        if not row["realtime"]:
            failed = n
            break
        best, n = row, n * 2
    lo, hi = (best["cameras"] if best else 0), min(n, most + 1)
    while hi - lo > 1:
        if not time_left():
            return best, failed, False
        mid = (lo + hi) // 2
        row = run(mid)
        if row["realtime"]:
            best, lo = row, mid
        else:
            failed, hi = mid, mid
    return best, failed, True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fps", type=float, nargs="+", default=[25.0, 10.0, 5.0], help="scoring rates to try")
    p.add_argument("--max-cameras", type=int, default=16)
    p.add_argument("--start", type=int, default=1,
                   help="camera count the search starts doubling from (a GPU skips the trials of 1..16)")
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window per trial")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--source", choices=["rtsp", "file"], help="camera source (default: rtsp if available)")
    p.add_argument("--serve-args", default="", help="extra `aedmae serve` arguments (e.g. --device cuda)")
    p.add_argument("--clip", default=str(FOOTAGE), help="the mp4 every camera plays")
    p.add_argument("--budget", type=float, default=0,
                   help="seconds for the whole search: no trial starts that would end after it (0: no limit); "
                        "a cut search reports its best count so far and the smallest count that failed")
    p.add_argument("--json")
    p.add_argument("--counts", type=int, nargs="+",
                   help="measure these camera counts instead of searching (e.g. 32 48 64: past capacity)")
    p.add_argument("--server-log", help="write the server's log here (default: a temporary file)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the server during the first trial (what holds the GIL, where the time goes)")
    p.add_argument("--quick", action="store_true", help="smoke run: 5 fps, at most 2 cameras, 4 s windows")
    args = p.parse_args()
    if args.quick:
        args.fps, args.max_cameras, args.seconds, args.warmup = [5.0], 2, 4.0, 3.0
    have_rtsp = subprocess.run(["/usr/bin/python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                               capture_output=True).returncode == 0 if Path("/usr/bin/python3").exists() else False
    source = args.source or ("rtsp" if have_rtsp else "file")
    if source == "rtsp" and not have_rtsp:
        sys.exit("--source rtsp needs GStreamer's RTSP server for the system python (scripts/setup.sh installs it)")
    if not Path(args.clip).exists() and not shutil.which("gst-launch-1.0"):
        sys.exit(f"needs {args.clip} or gst-launch-1.0 to make a clip")
    clip = footage(Path(args.clip).resolve())  # the server opens it from its own working directory
    if args.profile and not shutil.which("py-spy"):
        sys.exit("--profile needs py-spy on the PATH (pip install py-spy)")
    server, url = start_server(args.serve_args, args.server_log)
    trials, summary, profile = [], [], {}
    end = time.monotonic() + args.budget if args.budget else float("inf")

    def time_left() -> bool:  # room for one more trial (registration and queries: about 3 s)
        return time.monotonic() + args.warmup + args.seconds + 3 < end

    try:
        for fps in args.fps:
            def run(n: int, fps: float = fps) -> dict[str, Any]:
                profiler = None
                if args.profile and not profile:  # the first trial, sampled over its measurement window
                    profiler = threading.Timer(args.warmup + 1, lambda: profile.update(
                        profile_server(server.pid, max(1, int(args.seconds) - 2)), cameras=n, fps=fps))
                    profiler.start()
                if source == "file":
                    row = trial(url, str(clip), n, fps, args.warmup, args.seconds)
                else:
                    rtsp_proc, rtsp = start_rtsp(clip)  # a fresh server per trial: the clip plays from its start
                    try:
                        row = trial(url, rtsp, n, fps, args.warmup, args.seconds)
                    finally:
                        rtsp_proc.kill()
                        rtsp_proc.wait(10)
                if profiler is not None:
                    profiler.join()
                    report_profile(profile, row)
                trials.append(row)
                print(f"  {n:>3} camera(s) at {fps:g} fps: {row}", flush=True)
                return row

            if args.counts:  # fixed counts, no search: how the server behaves at and past its capacity
                rows = [run(n) for n in args.counts]
                fits = [r for r in rows if r["realtime"]]
                best = max(fits, key=lambda r: r["cameras"]) if fits else None
                failed = min((r["cameras"] for r in rows if not r["realtime"]), default=None)
                complete = True
            else:
                best, failed, complete = search(run, args.max_cameras, time_left, args.start)
            summary.append({"fps": fps, "max_realtime_cameras": best["cameras"] if best else 0,
                            "smallest_failing": failed, "complete": complete,
                            "frame_age_p50_s": best["frame_age_p50_s"] if best else None,
                            "frame_age_p99_s": best["frame_age_p99_s"] if best else None,
                            "scored_fps_total": best["scored_fps_total"] if best else None})
        model = httpx.get(url + "/v1/model").json()
    finally:
        stop_servers([(server, url)])
    print(f"\nsource {source}; frame age = capture to score, including the look-ahead of 3 frames")
    print(f"{'scoring fps':>11} | {'look-ahead':>10} | {'cameras in real time':>20} | {'frame age p50':>13} | "
          f"{'p99':>7} | scored fps")
    for s in summary:
        cameras = f"{s['max_realtime_cameras']}" + ("" if s["complete"] else f" (search cut: <{s['smallest_failing']})"
                                                   if s["smallest_failing"] else " (search cut)")
        print(f"{s['fps']:>11g} | {3 / s['fps']:>10.2f} | {cameras:>20} | "
              f"{s['frame_age_p50_s'] or '-':>13} | {s['frame_age_p99_s'] or '-':>7} | {s['scored_fps_total'] or '-'}")
    result = {"source": source, "footage": str(clip), "seconds": args.seconds, "backend": model["backend"],
              "file": model["file"], "max_batch_size": model["max_batch_size"], "summary": summary, "trials": trials,
              "profile": profile}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
