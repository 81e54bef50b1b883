"""The dynamic batcher. It knows nothing about HTTP or cameras: it takes jobs (one model input each,
with a deadline and a future), forms batches, hands them to workers and resolves the futures.

Policy (one short function, :meth:`Batcher._collect`): a worker takes the oldest job, then keeps
taking jobs until the batch holds ``max_batch`` or ``max_delay_s`` has passed since that oldest job
was queued; the delay applies only while the batch is not full. Each worker owns one backend
instance (its own session / execution context / CUDA stream). The queue is bounded (in frames);
a job past its deadline fails fast without running; a failed batch fails exactly its own jobs.

Cancelled jobs (a camera's frames superseded by newer ones, requests whose client left) cost nothing
in the queue: :meth:`Batcher.cancel` counts them out of its depth at once, a worker takes all the jobs
it can under one hold of the lock and drops the cancelled ones there, and the queue drops the rest in
one walk per capacity/2 cancellations. Before session 24 a worker took one job per hold and an
overloaded camera server's queue filled with superseded frames and refused live ones ("queue_full"):
without those refusals the H200 scored 36 cameras in real time instead of 32 (benchmarks/RESULTS.md,
session 24). Until session 29 a full queue walked itself on every refusal and every camera frame it
admitted in a superseded one's place: 0.2 ms under the lock and the GIL each (benchmarks/batcher_cost.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.backends import Backend
from service.errors import DeadlineExceeded, InferenceFailed, NotReady, Overloaded
from service.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class Job:
    frames: np.ndarray  # (3, H, W, C) uint8: frames t-g, t, t+g (g: the model's context gap)
    deadline: float  # time.monotonic() after which the job fails without running
    source: str = "http"  # "http" or a camera id
    future: Future[dict[str, Any]] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)
    queued: bool = field(default=False, repr=False)  # in the batcher's queue (under its lock)
    counted: bool = field(default=False, repr=False)  # counted there as cancelled (Batcher.cancel)


class Batcher:
    def __init__(self, backends: list[Backend], max_batch: int, max_delay_s: float, capacity: int,
                 metrics: Metrics) -> None:
        if not backends:
            raise ValueError("the batcher needs at least one backend")
        self.backends = backends
        self.max_batch = min([max_batch] + [b.max_batch for b in backends])
        self.max_delay_s = max_delay_s
        self.capacity = capacity
        self.metrics = metrics
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._cancelled = 0  # jobs in the queue counted as cancelled (:meth:`cancel`): they take no place

    @property
    def depth(self) -> int:
        """Frames waiting for inference (cancelled ones not counted)."""
        return len(self._queue) - self._cancelled

    def submit(self, jobs: list[Job]) -> None:
        """Queue all jobs or none. Raises Overloaded when they do not fit, NotReady when stopping."""
        with self._cond:
            if self._stopping:
                raise NotReady("the server is shutting down")
            self.check_room(len(jobs))
            for job in jobs:
                job.queued = True
            self._queue.extend(jobs)
            if self._cancelled > self.capacity // 2:
                self._shed()
            self.metrics.queue_depth.set(self.depth)
            self._cond.notify(len(jobs))

    def check_room(self, frames: int) -> None:
        """Raise Overloaded (429 with Retry-After, counted as queue_full) if ``frames`` more would not
        fit in the queue now. :meth:`submit` asks under its lock; the HTTP route asks before it decodes
        a request's images, so that an overloaded server does not decode what it will refuse."""
        if self.depth + frames > self.capacity:
            self.metrics.rejected.labels(reason="queue_full").inc()
            retry = max(1, round(self.retry_after_s()))
            raise Overloaded(f"{self.depth} frames are queued (capacity {self.capacity}); "
                             f"retry in {retry} s", headers={"Retry-After": str(retry)})

    def cancel(self, jobs: list[Job]) -> None:
        """Cancel jobs nobody waits for any more (superseded camera frames, a request that timed out or
        whose client left). Those still queued are never run and take no place in the queue from now on:
        a full queue of superseded frames admits live ones. Every cancellation goes through here."""
        cancelled = [job for job in jobs if job.future.cancel()]  # False: running or done, scored after all
        if cancelled:  # (cancel() runs done-callbacks, which may take their own locks: not under ours)
            with self._cond:
                for job in cancelled:
                    if job.queued and not job.counted:
                        job.counted = True
                        self._cancelled += 1
                self.metrics.queue_depth.set(self.depth)

    def _shed(self) -> None:
        """Drop the cancelled jobs from the queue (under the lock): O(queue), so :meth:`submit` does it
        once per capacity/2 cancellations, which bounds the queue at 1.5 x capacity jobs, dead or alive.
        (Walking it on every refusal or every camera frame of a full queue cost 0.2 ms of GIL each:
        benchmarks/batcher_cost.py.)"""
        kept: deque[Job] = deque()
        for job in self._queue:
            if job.future.cancelled():
                job.queued = False
            else:
                kept.append(job)
        self._queue = kept
        self._cancelled = 0

    def dead_workers(self) -> int:
        """Workers whose thread has ended while the batcher serves: none, unless a fault escaped the
        per-batch guard (then ``/healthz`` fails, so that the process gets restarted)."""
        return 0 if self._stopping else sum(not t.is_alive() for t in self._threads)

    def retry_after_s(self) -> float:
        """A rough time for the queue to drain: batches ahead x the last batch's duration."""
        per_batch = getattr(self, "_last_batch_s", 0.1)
        return self.depth / max(1, self.max_batch) * per_batch / max(1, len(self.backends))

    def start(self) -> None:
        for i, backend in enumerate(self.backends):
            t = threading.Thread(target=self._worker, args=(backend,), name=f"aedmae-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop taking jobs; the workers finish what is queued (each within its deadline) and end."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout_s)
        self._threads.clear()

    # -- worker side ----------------------------------------------------------------------------
    def _collect(self) -> tuple[list[Job], str] | None:
        """The next batch and what closed it ("full" or "timeout"); None once stopping with nothing queued."""
        batch: list[Job] = []
        with self._cond:
            while True:
                while self._queue and len(batch) < self.max_batch:
                    job = self._queue.popleft()
                    job.queued = False
                    if not job.future.cancelled():
                        batch.append(job)
                    elif job.counted:  # superseded while queued: nothing to run or resolve
                        self._cancelled -= 1
                if len(batch) == self.max_batch or (self._stopping and not self._queue):
                    break
                remaining = batch[0].enqueued + self.max_delay_s - time.monotonic() if batch else None
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            self.metrics.queue_depth.set(self.depth)
        if not batch:
            return None
        return batch, "full" if len(batch) == self.max_batch else "timeout"

    def _worker(self, backend: Backend) -> None:
        try:
            self._serve(backend)
        except Exception:  # the thread ends here, logged; /healthz and /readyz report it
            log.exception("inference worker %s stopped; /healthz now fails", threading.current_thread().name)

    def _serve(self, backend: Backend) -> None:
        while True:
            collected = self._collect()
            if collected is None:
                return
            batch, trigger = collected
            now = time.monotonic()
            live = []
            for job in batch:
                if not job.future.set_running_or_notify_cancel():  # cancelled while queued; no longer cancellable
                    continue
                if job.deadline < now:
                    if job.source == "http":  # a camera counts its own drops (stale frames), by camera
                        self.metrics.rejected.labels(reason="deadline").inc()
                    job.future.set_exception(DeadlineExceeded("the frame waited past its deadline"))
                    continue
                self.metrics.queue_wait.observe(now - job.enqueued)
                live.append(job)
            if live:
                self._run(backend, live, trigger)

    def _run(self, backend: Backend, jobs: list[Job], trigger: str) -> None:
        self.metrics.batches.labels(trigger=trigger).inc()
        self.metrics.batch_size.observe(len(jobs))
        t0 = time.perf_counter()
        try:
            outputs = backend.infer(np.stack([j.frames for j in jobs]))
            if any(len(v) != len(jobs) for v in outputs.values()):  # a backend fault must not end the worker
                raise RuntimeError(f"the backend returned {sorted({len(v) for v in outputs.values()})} rows "
                                   f"for {len(jobs)} frames")
        except Exception as e:
            log.exception("inference failed for a batch of %d frames", len(jobs))
            self.metrics.inference_errors.labels(reason="backend_error").inc()  # the type is in the log
            for job in jobs:
                job.future.set_exception(InferenceFailed(f"inference failed: {type(e).__name__}: {e}"))
            return
        seconds = time.perf_counter() - t0
        self._last_batch_s = seconds
        self.metrics.inference_duration.labels(backend=backend.name).observe(seconds)
        self.metrics.inference_frames.inc(len(jobs))
        for i, job in enumerate(jobs):
            job.future.set_result({k: v[i] for k, v in outputs.items()})
