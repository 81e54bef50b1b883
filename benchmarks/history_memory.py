"""What a camera's score history costs (``stream_history`` records a camera, `GET
/v1/streams/{id}/scores`): the server's resident memory once ``--cameras`` file cameras have each
scored every frame of ``--clip``, with ``stream_history`` as long as the clip against 10, in turns.

    python benchmarks/streams_testbed.py --out runs/testbed
    python benchmarks/history_memory.py --clip runs/testbed/clip.mp4 \\
        --serve-args "--model runs/testbed/model/model.onnx --max-batch-size 64" [--cameras 32] [--json FILE]

The difference over the records kept is the memory a record takes (the records of real cameras hold
the same fields whatever the model). Multiply by ``stream_history`` and ``max_streams`` to size a
server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import bench_service
import cv2
import httpx


def rss_mb(pid: int) -> float:
    return bench_service.proc_status(pid)["VmRSS"] / 1024


def run(history: int, clip: Path, cameras: int, serve_args: str) -> dict[str, Any]:
    """Serve with ``stream_history`` = ``history``, let every camera score the whole clip, measure."""
    os.environ["AEDMAE_STREAM_HISTORY"] = str(history)
    server, url = bench_service.start_server(serve_args)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(cameras):
                r = client.post("/v1/streams", json={"id": f"h{i}", "url": str(clip.resolve())})
                r.raise_for_status()
            t0 = time.monotonic()
            while True:
                described = [client.get(f"/v1/streams/h{i}").json() for i in range(cameras)]
                if all(d["state"] == "ended" and not d["frames"]["received"] - d["frames"]["scored"]
                       - sum(d["frames"]["dropped"].values()) for d in described):
                    break
                if time.monotonic() - t0 > 600:
                    raise SystemExit("the cameras did not finish within 10 minutes")
                time.sleep(1)
            scored = sum(d["frames"]["scored"] for d in described)
            kept = sum(len(client.get(f"/v1/streams/h{i}/scores", params={"limit": history}).json()["scores"])
                       for i in range(cameras))
            samples = []
            for _ in range(5):
                time.sleep(1)
                samples.append(rss_mb(server.pid))
        return {"stream_history": history, "frames_scored": scored, "records_kept": kept,
                "rss_mb": round(statistics.median(samples), 1), "seconds": round(time.monotonic() - t0, 1)}
    finally:
        bench_service.stop_servers([(server, url)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", required=True, help="a short video file, each camera plays it once")
    p.add_argument("--cameras", type=int, default=32)
    p.add_argument("--serve-args", default="")
    p.add_argument("--rounds", type=int, default=2, help="short and long history in turns, this many times")
    p.add_argument("--json")
    args = p.parse_args()
    clip = Path(args.clip)
    frames = int(cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FRAME_COUNT))
    if frames < 100:
        raise SystemExit(f"{clip}: {frames} frames; give a clip of at least 100")
    rows = []
    for _ in range(args.rounds):
        for history in (10, frames):
            rows.append(run(history, clip, args.cameras, args.serve_args))
            print(rows[-1], flush=True)
    short = statistics.median(r["rss_mb"] for r in rows if r["stream_history"] == 10)
    long = [r for r in rows if r["stream_history"] == frames]
    extra = statistics.median(r["rss_mb"] for r in long) - short
    records = statistics.median(r["records_kept"] for r in long) - 10 * args.cameras
    per_record = extra * 2**20 / records
    print(f"{args.cameras} cameras x {frames} frames: {extra:.1f} MB more resident memory for {records} more "
          f"records kept = {per_record:.0f} bytes a record; at the default stream_history 3000: "
          f"{per_record * 3000 / 2**20:.1f} MB a camera, {per_record * 3000 * 64 / 2**20:.0f} MB for max_streams 64")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"clip": str(clip), "cameras": args.cameras, "rows": rows, "bytes_per_record": round(per_record)},
            indent=2) + "\n")


if __name__ == "__main__":
    main()
