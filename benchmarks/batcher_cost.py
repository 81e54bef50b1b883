"""What the dynamic batcher itself costs, with no model and no HTTP: per frame scored, and per request
it refuses when its queue is full (the price of shedding load, paid under the batcher's lock and the GIL).

    python benchmarks/batcher_cost.py [--capacity N] [--rounds R] [--json FILE]

Rows (medians over R rounds):
- refused: a queue full of ``capacity`` live frames (no worker takes them), 4 x capacity more 1-frame
  requests, each refused with 429, in microseconds a request;
- shed one cancelled, accepted: the same, but before each request the oldest queued frame is cancelled
  (a camera superseding its frame), so each is accepted in its place;
- scored: requests of 8 frames through a started batcher (one worker, max batch 16, no delay) whose
  backend answers at once, until every frame is resolved, in microseconds a frame.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.batcher import Batcher, Job
from service.errors import Overloaded
from service.metrics import Metrics

FRAME = np.zeros((3, 2, 2, 1), np.uint8)


class InstantBackend:
    name = "instant"
    max_batch = 16

    def infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        n = len(frames)
        return {"score": np.zeros(n, np.float32), "heatmap": np.zeros((n, 2, 2), np.float32)}


def job() -> Job:
    return Job(FRAME, time.monotonic() + 60.0)


def refused_us(capacity: int, requests: int, cancel_one: bool) -> tuple[float, float]:
    """Microseconds a 1-frame request takes to be refused or, with ``cancel_one`` (a camera superseding
    its oldest queued frame before it queues the next: both timed), to be accepted; and the share accepted."""
    b = Batcher([InstantBackend()], 16, 0.0, capacity, Metrics())  # not started: nothing leaves the queue
    live = deque(job() for _ in range(capacity))
    b.submit(list(live))
    spent, accepted = 0.0, 0
    for _ in range(requests):
        t0 = time.perf_counter()
        if cancel_one:
            b.cancel([live.popleft()])
        new = job()
        with contextlib.suppress(Overloaded):
            b.submit([new])
            live.append(new)
            accepted += 1
        spent += time.perf_counter() - t0
    return spent / requests * 1e6, accepted / requests


def scored_us(frames: int) -> float:
    b = Batcher([InstantBackend()], 16, 0.0, 4096, Metrics())
    b.start()
    t0 = time.perf_counter()
    jobs = []
    for _ in range(frames // 8):
        request = [job() for _ in range(8)]
        while True:
            try:
                b.submit(request)
                break
            except Overloaded:
                time.sleep(0.001)
        jobs += request
    for j in jobs:
        j.future.result(30)
    spent = time.perf_counter() - t0
    b.stop()
    return spent / len(jobs) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capacity", type=int, default=512, help="queue capacity (the server's default: 512)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows: dict[str, list[float]] = {"refused": [], "shed one cancelled, accepted": [], "scored": []}
    accepted = {"refused": 0.0, "shed one cancelled, accepted": 0.0}
    for r in range(args.rounds):
        for name in accepted:
            us, share = refused_us(args.capacity, 4 * args.capacity, cancel_one=name != "refused")
            rows[name].append(us)
            accepted[name] = max(accepted[name], share)
        rows["scored"].append(scored_us(8000))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    print(f"| batcher, capacity {args.capacity} | median | runs (us) |\n|---|---|---|")
    for name, values in rows.items():
        unit = "us a frame" if name == "scored" else "us a request"
        runs = " / ".join(f"{v:.1f}" for v in values)
        share = f" ({accepted[name]:.0%} accepted)" if name in accepted else ""
        print(f"| {name}{share} | {statistics.median(values):.1f} {unit} | {runs} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        medians = {k: statistics.median(v) for k, v in rows.items()}
        args.json.write_text(json.dumps({"capacity": args.capacity, "rounds": args.rounds, "us": rows,
                                         "accepted_share": accepted, "median_us": medians}, indent=2))


if __name__ == "__main__":
    main()
