"""End-to-end service speed: real footage as JPEG batches from concurrent clients over loopback.

    python benchmarks/bench_service.py [--clients 8] [--frames-per-request 8] [--seconds 20]
        [--compare-batch1] [--heatmaps grid png boxes] [--serve-args "..."] [--servers N] [--footage DIR]
        [--profile] [--json FILE] [--quick]

Starts ``aedmae serve`` (the shipped model unless --serve-args says otherwise) on a free loopback
port, sends JPEGs cut from ../shared/data/footage/*.mp4 (a generated clip when that is absent),
and reports frames/s, request latency p50/p95/p99, the batch-size distribution and rejections
(from the server's own /metrics). ``--compare-batch1`` runs again with max_batch_size=1 (with
1-frame requests, and with the dynamic row's own requests, so that HTTP load is held equal), and the
model-level frames/s of the same backend (ONNX Runtime, same threads, batch = the served max batch)
is measured in the same run, so both targets are ratios from one run on one machine. Each row also
says where the time went: the workers' busy share and the mean queue wait (from /metrics); ``--profile``
samples the server with py-spy during the dynamic row and reports the GIL held per frame scored
(``gil_ms_per_frame``: the GIL-held share of the sampled seconds over the row's frames/s).
``--heatmaps`` loads the same server again asking for each heatmap form (``heatmap=`` of /v1/score),
so what a heatmap costs, in frames/s and in response bytes a frame, is a ratio to the dynamic row
(``heatmap=none``) of the same run. ``--servers N`` serves with N processes side by side (what a load
balancer in front of several ``aedmae serve`` on one GPU does), to measure past one process's Python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOOTAGE = ROOT.parent / "shared" / "data" / "footage"


def footage_jpegs(count: int, footage: Path = FOOTAGE) -> list[bytes]:
    """Real surveillance frames as JPEG (640x360), or a generated clip without ../shared."""
    frames: list[np.ndarray] = []
    for video in sorted(footage.glob("*.mp4")):
        cap = cv2.VideoCapture(str(video))
        while len(frames) < count:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
    if not frames:
        print(f"note: no mp4 in {footage}; using a generated clip", file=sys.stderr)
        sys.path.insert(0, str(ROOT))
        from model.golden import golden_clip

        frames = list(golden_clip(360, 640, 3, frames=count))
    return [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def profile_server(pid: int, seconds: int, rate: int = 200) -> dict[str, Any]:
    """py-spy samples of the server while it is under load: first only the thread holding the GIL
    (its share of the time is what bounds the Python side), then every thread. Top frames by self time,
    and functions by total time (anywhere on the stack)."""
    out: dict[str, Any] = {"seconds": seconds, "rate_hz": rate}
    for mode, extra in (("gil", ["--gil"]), ("all", [])):
        with tempfile.NamedTemporaryFile(suffix=".txt") as f:
            r = subprocess.run(["py-spy", "record", "-p", str(pid), "-d", str(seconds), "-r", str(rate), "-f", "raw",
                                "-o", f.name, "--nonblocking", *extra], capture_output=True, text=True)
            if r.returncode != 0:
                return out | {"error": r.stderr[-500:]}
            counts: dict[str, int] = {}
            inclusive: dict[str, int] = {}  # samples with the function anywhere on the stack (line numbers dropped)
            for line in Path(f.name).read_text().splitlines():
                stack, _, n = line.rpartition(" ")
                leaf = stack.rpartition(";")[2]
                counts[leaf] = counts.get(leaf, 0) + int(n)
                for fn in {re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")}:
                    inclusive[fn] = inclusive.get(fn, 0) + int(n)
        total = max(sum(counts.values()), 1)
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:12]
        top_total = sorted(inclusive.items(), key=lambda kv: -kv[1])[:60]  # past the ASGI wrapper chain
        out[mode] = {"samples": total, "top_self": [[k, round(v / total, 3)] for k, v in top],
                     "top_total": [[k, round(v / total, 3)] for k, v in top_total]}
    out["gil_held_share"] = round(out["gil"]["samples"] / (seconds * rate), 3)
    return out


def add_gil_per_frame(profile: dict[str, Any], frames_per_s: float) -> None:
    """The GIL held per frame scored, in ms: the Python side's cost a frame, what caps one process."""
    share = profile.get("gil_held_share")
    if share is not None and frames_per_s:
        profile["gil_ms_per_frame"] = round(1000 * share / frames_per_s, 3)


_TEMPORARY_LOGS: dict[int, Path] = {}  # server pid -> its log in a folder of its own under /tmp


def start_server(serve_args: str, log_path: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``aedmae serve`` on a free port, ready. Its log goes to ``log_path`` (default: a file in /tmp),
    never to a pipe: nobody reads a pipe while the benchmark runs, and a server whose log fills one
    (64 KiB) blocks in its next log call, a camera removal or a failed batch's traceback included."""
    return start_servers(serve_args, 1, log_path)[0]


def start_servers(serve_args: str, count: int,
                  log_path: str | None = None) -> list[tuple[subprocess.Popen[bytes], str]]:
    """``count`` servers started together (each on its own port, with its own model copy, batcher and
    log: ``log_path`` with .N added after the first), every one of them ready."""
    started = []
    for i in range(count):
        port = free_port()
        cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), *shlex.split(serve_args)]
        log = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="aedmae-serve-")) / "serve.log"
        log = log.with_name(f"{log.name}.{i}") if i else log
        with log.open("wb") as f:  # the server holds its own copy of the file
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=f)
        if not log_path:
            _TEMPORARY_LOGS[proc.pid] = log
        started.append((proc, f"http://127.0.0.1:{port}", log))
    try:
        return [(proc, wait_ready(proc, url, log)) for proc, url, log in started]
    except BaseException:
        stop_servers([(proc, url) for proc, url, _ in started])
        raise


def stop_servers(servers: list[tuple[subprocess.Popen[bytes], str]]) -> None:
    """Stop the servers. A temporary log is removed when its server stopped cleanly and the benchmark
    is not ending in an exception (this is called from ``finally``); otherwise its path is printed."""
    for proc, _ in servers:
        proc.terminate()
    failing = sys.exc_info()[0] is not None
    for proc, _ in servers:
        proc.wait(30)
        log = _TEMPORARY_LOGS.pop(proc.pid, None)
        if log is not None and (failing or proc.returncode not in (0, -signal.SIGTERM)):  # uvicorn re-raises it
            print(f"server (exit {proc.returncode}) log kept: {log}", file=sys.stderr)
        elif log is not None:
            shutil.rmtree(log.parent, ignore_errors=True)


def proc_status(pid: int) -> dict[str, int]:
    """A process's /proc status counters (VmRSS, VmHWM in kB, Threads, ...): the numeric first word of each line."""
    fields = (line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(value.split()[0]) for name, value in fields if value.split()[:1] and value.split()[0].isdigit()}


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> str:
    end = time.monotonic() + 180
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_bytes().decode(errors='replace')[-2000:]}")
        try:
            r = httpx.get(url + "/readyz", timeout=2)
            if r.status_code == 200:
                return url
            state = str(r.json()["detail"].get("state"))
            if state.startswith("model failed") or state == "parity_failed":  # it will never be ready
                proc.kill()
                raise RuntimeError(f"server not ready: {r.json()['detail']}")
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def batch_size_buckets(text: str) -> dict[str, float]:
    """The batch-size histogram's cumulative counts by upper bound, summed over every server in ``text``."""
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("aedmae_batch_size_bucket"):
            le = line.split('le="')[1].split('"')[0]
            counts[le] = counts.get(le, 0.0) + float(line.rpartition(" ")[2])
    return counts


def metric_sum(text: str, name: str) -> float:
    """The sum of a metric's samples over all its label sets."""
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in "{ ")


def growth(before: str, after: str, name: str) -> float:
    """A counter's (or histogram part's) growth between two scrapes, summed over its labels."""
    return metric_sum(after, name) - metric_sum(before, name)


def load(urls: list[str], jpegs: list[bytes], clients: int, per_request: int, seconds: float,
         heatmap: str = "none") -> dict[str, Any]:
    """``clients`` clients, client k sending to server k mod len(urls); metrics summed over the servers."""
    latencies: list[float] = []
    response_bytes: list[int] = []
    codes: dict[int, int] = {}
    frames_done = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(timeout=60) as c:
            i = k * per_request
            while time.monotonic() < stop_at:
                batch = [jpegs[(i + j) % len(jpegs)] for j in range(per_request)]
                i += per_request
                files = [("frames", (f"{j}.jpg", b, "image/jpeg")) for j, b in enumerate(batch)]
                t0 = time.perf_counter()
                r = c.post(urls[k % len(urls)] + "/v1/score", files=files, params={"heatmap": heatmap})
                dt = time.perf_counter() - t0
                with lock:
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        latencies.append(dt)
                        response_bytes.append(len(r.content))
                        frames_done[0] += per_request
                if r.status_code == 429:  # this client waits as told; the others go on (not under the lock)
                    time.sleep(float(r.headers.get("retry-after", "1")))

    before_texts = [httpx.get(url + "/metrics").text for url in urls]
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    after_texts = [httpx.get(url + "/metrics").text for url in urls]
    before_text, after_text = "\n".join(before_texts), "\n".join(after_texts)

    def grown(name: str) -> float:  # over every server
        return growth(before_text, after_text, name)

    waits, batches, total = (grown(f"aedmae_{name}") for name in
                             ("queue_wait_seconds_count", "batch_size_count", "batch_size_sum"))
    workers = metric_sum(after_text, "aedmae_inference_workers")
    before, after = batch_size_buckets(before_text), batch_size_buckets(after_text)
    buckets = {le: n - before.get(le, 0.0) for le, n in after.items()}
    q = np.quantile(latencies, [0.5, 0.95, 0.99]) if latencies else [float("nan")] * 3
    return {"frames_per_s": round(frames_done[0] / elapsed, 1), "requests": sum(codes.values()), "codes": codes,
            "latency_s": {"p50": round(q[0], 4), "p95": round(q[1], 4), "p99": round(q[2], 4)},
            "mean_batch_size": round(total / batches, 2) if batches else 0, "batch_size_buckets": buckets,
            "clients": clients, "frames_per_request": per_request, "seconds": round(elapsed, 1),
            "heatmap": heatmap, "servers": len(urls), "frames_by_server": [
                round(growth(b, a, "aedmae_inference_frames_total")) for b, a in zip(before_texts, after_texts,
                                                                                      strict=True)],
            "response_bytes_per_frame":
                round(statistics.median(response_bytes) / per_request) if response_bytes else None,
            # where the time went: the backend's busy share of the workers' time (near 1: the model is the
            # limit; well below: decoding, HTTP or the clients are), and a frame's mean wait in the queue
            "workers_busy": round(grown("aedmae_inference_duration_seconds_sum") / (elapsed * workers), 3),
            "queue_wait_mean_s": round(grown("aedmae_queue_wait_seconds_sum") / waits, 4) if waits else None}


def model_level_fps(url: str, batch: int, served_model: str | None) -> float:
    """ONNX Runtime frames/s of the served graph at the served batch size, threads as the server's."""
    sys.path.insert(0, str(ROOT))
    from export.bundle import load_bundle
    from export.ort_fusion import ort_session
    from model.shipped import SHIPPED_DIR

    info = httpx.get(url + "/v1/model").json()
    bundle = load_bundle(served_model or SHIPPED_DIR)
    sess = ort_session(bundle.graph, os.cpu_count())  # the server's session: one worker, every core
    h, w = info["resolution"]
    x = np.random.default_rng(0).integers(0, 256, (batch, 3, h, w, info["channels"]), np.uint8)
    sess.run(None, {"frames": x})
    samples = []
    for _ in range(7):
        t0 = time.perf_counter()
        sess.run(None, {"frames": x})
        samples.append(batch / (time.perf_counter() - t0))
    return statistics.median(samples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--frames-per-request", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--serve-args", default="--max-batch-size 16")
    p.add_argument("--compare-batch1", action="store_true",
                   help="also serve with max_batch_size=1 (1 frame per request, and the dynamic row's requests)")
    p.add_argument("--heatmaps", nargs="+", default=[], choices=["grid", "png", "boxes"],
                   help="also load the same server asking for each heatmap form (the dynamic row asks for none)")
    p.add_argument("--profile", action="store_true", help="py-spy the (first) server during the dynamic row")
    p.add_argument("--servers", type=int, default=1,
                   help="serve with this many processes on one machine (each its own port, model copy and batcher; "
                        "client k sends to server k mod N): past one process's Python, as a load balancer would")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--footage", default=str(FOOTAGE), help="folder of mp4 files to cut frames from")
    p.add_argument("--json")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.clients = 3, 4
    jpegs = footage_jpegs(64, Path(args.footage))
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "settings": vars(args)}
    servers = start_servers(args.serve_args, args.servers)
    (proc, url), urls = servers[0], [u for _, u in servers]
    try:
        profiler = None
        if args.profile:
            if not shutil.which("py-spy"):
                sys.exit("--profile needs py-spy on the PATH (pip install py-spy)")
            seconds = int(max(1, min(5, (args.seconds - 2) // 2)))
            profiler = threading.Timer(2.0, lambda: result.update(profile=profile_server(proc.pid, seconds)))
            profiler.start()
        result["dynamic"] = load(urls, jpegs, args.clients, args.frames_per_request, args.seconds)
        if profiler is not None:
            profiler.join()  # the first server scored about its share of the frames
            add_gil_per_frame(result.get("profile", {}), result["dynamic"]["frames_per_s"] / args.servers)
        if not args.serve_args.count("cuda"):
            served_batch = int(httpx.get(url + "/v1/model").json()["max_batch_size"])
            argv = shlex.split(args.serve_args)
            served_model = argv[argv.index("--model") + 1] if "--model" in argv else None
            result["model_level_fps"] = round(model_level_fps(url, served_batch, served_model), 1)
            result["end_to_end_vs_model"] = round(result["dynamic"]["frames_per_s"] / result["model_level_fps"], 3)
        print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=1), flush=True)
        save(result, args.json)  # what is measured so far survives a time limit cutting the rest short
        for mode in args.heatmaps:  # after the dynamic row, on the same warm server
            row = load(urls, jpegs, args.clients, args.frames_per_request, args.seconds, heatmap=mode)
            row["fps_vs_no_heatmap"] = round(row["frames_per_s"] / max(result["dynamic"]["frames_per_s"], 1e-9), 3)
            result[f"heatmap_{mode}"] = row
            print(json.dumps({f"heatmap_{mode}": row}, indent=1), flush=True)
            save(result, args.json)
    finally:
        stop_servers(servers)
    if args.compare_batch1:
        servers = start_servers(args.serve_args + " --max-batch-size 1", args.servers)
        try:
            urls = [u for _, u in servers]
            result["batch1"] = load(urls, jpegs, args.clients, 1, args.seconds)
            # the same requests as the dynamic row: what batching alone buys, HTTP load held equal
            result["batch1_same_requests"] = load(urls, jpegs, args.clients, args.frames_per_request, args.seconds)
            result["dynamic_1frame"] = None
        finally:
            stop_servers(servers)
        servers = start_servers(args.serve_args, args.servers)
        try:
            result["dynamic_1frame"] = load([u for _, u in servers], jpegs, args.clients, 1, args.seconds)
        finally:
            stop_servers(servers)
        result["dynamic_vs_batch1"] = round(result["dynamic_1frame"]["frames_per_s"] /
                                            max(result["batch1"]["frames_per_s"], 1e-9), 2)
        result["dynamic_vs_batch1_same_requests"] = round(
            result["dynamic"]["frames_per_s"] / max(result["batch1_same_requests"]["frames_per_s"], 1e-9), 2)
        keys = ("batch1", "batch1_same_requests", "dynamic_1frame", "dynamic_vs_batch1",
                "dynamic_vs_batch1_same_requests")
        print(json.dumps({k: result[k] for k in keys}, indent=1))
    save(result, args.json)


def save(result: dict[str, Any], path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
