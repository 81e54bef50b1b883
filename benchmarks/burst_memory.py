"""How much memory a burst of large uploads costs the server: its peak resident memory while
``--clients`` clients each POST one ``application/x-npy`` body of ``--frames`` frames at once.

    python benchmarks/burst_memory.py [--clients 12] [--frames 20] [--size 1000x1000] [--serve-args "..."]
        [--root PATH] [--json FILE]

Starts ``aedmae serve`` (the shipped model unless --serve-args says otherwise), sends the burst, and
reports the answers by status (200 scored, 429 refused at the door, 504 not scored within
``request_timeout_s``) and the server's peak resident memory (VmHWM) before and after the burst.
``--root`` serves the code of another checkout (e.g. a worktree of an older commit) to compare.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from collections import Counter
from pathlib import Path

import bench_service
import httpx
import numpy as np


def peak_mb(pid: int) -> int:
    return bench_service.proc_status(pid)["VmHWM"] // 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=12)
    p.add_argument("--frames", type=int, default=20, help="frames in each client's body")
    p.add_argument("--size", default="1000x1000", help="frame size, WxH")
    p.add_argument("--serve-args", default="")
    p.add_argument("--root", help="serve the code of this checkout instead of this one")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args()
    if args.root:
        bench_service.ROOT = Path(args.root).resolve()
    w, h = (int(v) for v in args.size.split("x"))
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).integers(0, 255, (args.frames, h, w, 3), np.uint8))
    body = buf.getvalue()
    server, url = bench_service.start_server(args.serve_args)
    try:
        before, codes = peak_mb(server.pid), Counter[int]()

        def post() -> None:
            r = httpx.post(url + "/v1/score", content=body, headers={"content-type": "application/x-npy"}, timeout=600)
            codes[r.status_code] += 1

        clients = [threading.Thread(target=post) for _ in range(args.clients)]
        t0 = time.monotonic()
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        result = {"clients": args.clients, "body_mb": round(len(body) / 1e6, 1),
                  "seconds": round(time.monotonic() - t0, 1),
                  "answers": {str(k): v for k, v in sorted(codes.items())},
                  "peak_rss_mb_before": before, "peak_rss_mb_after": peak_mb(server.pid),
                  "serve_args": args.serve_args, "root": str(bench_service.ROOT)}
    finally:
        bench_service.stop_servers([(server, url)])
    print(f"{args.clients} clients x {result['body_mb']} MB: answers {result['answers']}; server peak RSS "
          f"{result['peak_rss_mb_before']} -> {result['peak_rss_mb_after']} MB ({result['seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
