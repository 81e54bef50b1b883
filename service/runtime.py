"""The scoring runtime: model bundle, backends (one per worker), batcher, warm-up, the golden parity
check that gates readiness, and temporal windows for HTTP clips and stream_id contexts."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from export.bundle import TOLERANCES, Bundle, compare_outputs, infer_in_batches, load_bundle
from model.cuts import CutWindow
from service.backends import create_backend, resolve_backend
from service.batcher import Batcher, Job
from service.contexts import StreamContext, StreamContexts
from service.errors import DeadlineExceeded, NotReady
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ScoredClip:
    results: list[FrameResult]  # the frames that became ready, in order
    cuts: set[int]  # which of them begin a clip after a scene cut
    context: StreamContext | None = None  # with a stream_id
    pending: int = 0  # frames of the stream waiting for their look-ahead
    next_offset: int | None = None  # with a stream_id: frames of the stream so far


@dataclass
class FrameResult:
    index: int  # frame index within the request (or within the stream, with stream_id)
    outputs: dict[str, Any]  # the graph's outputs for this frame


class ScoringRuntime:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        path = settings.model_path()
        self.bundle: Bundle = load_bundle(path)
        self.backend_name = resolve_backend(settings, self.bundle.graph)
        self.backends = [create_backend(self.backend_name, self.bundle, settings) for _ in range(settings.workers)]
        self.batcher = Batcher(self.backends, settings.max_batch_size, settings.max_batch_delay_ms / 1000,
                               settings.queue_capacity, metrics)
        metrics.inference_workers.set(len(self.backends))
        metrics.inference_workers_stopped.set_function(self.batcher.dead_workers)  # read at every scrape
        self.contexts = StreamContexts(settings.stream_context_ttl_s, settings.max_stream_contexts,
                                       settings.scene_cut_change, self.bundle.context_gap)
        self.ready = False
        self.readiness: dict[str, Any] = {"state": "starting"}
        h, w = self.bundle.image_size
        metrics.model_info.info({
            "backend": self.backend_name, "precision": self.precision, "resolution": f"{h}x{w}",
            "channels": str(self.bundle.channels), "version": str(self.bundle.sidecar.get("code_version")),
            "file": self.bundle.graph.name,
        })

    @functools.cached_property
    def heatmap_scale(self) -> float:
        """Token score drawn as full intensity in PNG heatmaps: twice the alert threshold's score (an
        uncalibrated model: the golden clip's largest token score, read once)."""
        cal = self.bundle.sidecar.get("calibration")
        if cal:
            return 2.0 * float(cal["threshold"])
        return float(np.max(self.bundle.golden_reference()["heatmap"]))

    @property
    def precision(self) -> str:
        if self.backend_name == "torch":
            return self.settings.precision
        return self.bundle.precision

    def warmup_sizes(self) -> list[int]:
        """Powers of two up to the max batch, and the max batch itself (CUDA graphs capture exactly
        these; ONNX Runtime and TensorRT run any size in between without new allocations)."""
        sizes = [1 << i for i in range(self.batcher.max_batch.bit_length()) if 1 << i <= self.batcher.max_batch]
        return sorted({*sizes, self.batcher.max_batch})

    def start(self) -> None:
        """Warm up every worker at every batch size, check the golden clip, then start serving."""
        t0 = time.perf_counter()
        h, w = self.bundle.image_size
        for backend in self.backends:
            for size in self.warmup_sizes():
                backend.infer(np.zeros((size, 3, h, w, self.bundle.channels), np.uint8))
        parity, rates = self.golden_parity()
        self.batcher.start()
        seconds = time.perf_counter() - t0
        self.readiness = {"state": "ready" if parity["ok"] else "parity_failed", "golden_parity": parity,
                          "warmup_batch_sizes": self.warmup_sizes(), "warmup_seconds": round(seconds, 2),
                          "startup_frames_per_second": rates}
        self.ready = bool(parity["ok"])
        self.metrics.model_ready.set(1 if self.ready else 0)
        if not self.ready:
            log.error("golden-clip parity check failed; the server stays not ready: %s", parity)

    def golden_parity(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Each worker's outputs on the golden clip against the reference (the worst worker's errors),
        and how fast each scored it after warm-up: an operator's first estimate of what this machine
        can take (``per_worker``, frames/s; one worker at a time, so workers that share the cores do
        not add up, and on a GPU a 12-frame clip fills a batch less than traffic does)."""
        frames = self.bundle.golden_inputs()
        ref = self.bundle.golden_reference()
        results, rates = [], []
        for backend in self.backends:
            t0 = time.perf_counter()
            got = infer_in_batches(backend, frames, self.batcher.max_batch)
            rates.append(round(len(frames) / (time.perf_counter() - t0), 2))
            results.append(compare_outputs(got, ref, self.precision if self.precision in TOLERANCES else "fp16"))
        worst = max(results, key=lambda r: r["score_max_rel_err"])
        return (worst | {"ok": all(r["ok"] for r in results), "workers": len(results)},
                {"per_worker": rates, "frames": len(frames), "batch": min(len(frames), self.batcher.max_batch)})

    def stop(self) -> None:
        self.batcher.stop()
        self.ready = False
        self.metrics.model_ready.set(0)

    async def score_clip(self, frames: np.ndarray, stream_id: str | None, flush: bool,
                         offset: int | None = None) -> ScoredClip:
        """Score a request's frames: a whole clip with clamped edges (no ``stream_id``), or, with one,
        the frames whose look-ahead has arrived (all of them when ``flush``, which also ends the
        stream's context; ``offset``: service.contexts.StreamContext.push). A scene cut (model.cuts)
        ends a clip inside a request or a stream as its end would. A stream's request that fails
        leaves its context as it was (service.contexts), so the client can send it again."""
        if stream_id is None:
            window = CutWindow(self.settings.scene_cut_change, gap=self.bundle.context_gap)
            ready = window.push_many(frames) + window.flush()
            return ScoredClip(await self.score(ready) if ready else [], set(window.cut_frames))
        context = self.contexts.get(stream_id)
        pushed = context.push(frames, flush, offset)
        try:
            results = await self.score(pushed.ready) if pushed.ready else []
        except BaseException:
            if not pushed.undo():
                log.warning("stream_id %s: a failed request's frames cannot be put back (a later request of "
                            "the stream was taken meanwhile); its context answers 409 until deleted", stream_id)
            raise
        if flush:
            self.contexts.drop(stream_id)
        return ScoredClip(results, pushed.cuts, context, pushed.pending, 0 if flush else pushed.seen)

    async def score(self, inputs: list[tuple[int, np.ndarray]], source: str = "http") -> list[FrameResult]:
        """Queue the inputs as one all-or-nothing group and await their results."""
        if not self.ready:
            raise NotReady(f"the model is not ready ({self.readiness.get('state')})")
        timeout = self.settings.request_timeout_s
        deadline = time.monotonic() + timeout
        jobs = [Job(frames, deadline, source) for _, frames in inputs]
        self.batcher.submit(jobs)
        try:
            outputs = await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(j.future) for j in jobs)),
                                             timeout=timeout + 1.0)
        except asyncio.CancelledError:  # the client left: what is still queued is not run
            self.batcher.cancel(jobs)
            raise
        except TimeoutError:
            self.batcher.cancel(jobs)
            self.metrics.rejected.labels(reason="deadline").inc()
            raise DeadlineExceeded(f"frames were not scored within {timeout} s") from None
        return [FrameResult(i, o) for (i, _), o in zip(inputs, outputs, strict=True)]
