"""HTTP routes: scoring, model description, health, metrics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from model.calibration import ALERT
from model.regions import hot_regions
from service.decoding import Body, heatmap_png, images_to_frames, multipart_files, npy_frames, rgb_to_frames
from service.errors import (
    BadRequest,
    ClientClosed,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    UnsupportedMediaType,
)
from service.runtime import FrameResult, ScoringRuntime
from service.settings import STREAM_ID_PATTERN


class HotRegion(BaseModel):
    box: list[float] = Field(description="x0, y0, x1, y1 as fractions of the frame's width and height")
    peak: float = Field(description="the region's hottest token score (heatmap units)")
    share: float = Field(description="the region's share of the frame's total heat")
    tokens: int


class FrameScore(BaseModel):
    index: int = Field(description="frame index in the request, or in the stream when stream_id is given")
    score: float = Field(description="raw anomaly score (teacher error + discrepancy, per the model's scoring)")
    teacher_error: float
    discrepancy: float
    calibrated: float = Field(description=f"calibrated score in [0, 1]; {ALERT} is the alert threshold")
    is_anomaly: bool = Field(description=f"calibrated >= {ALERT}")
    cut: bool = Field(False, description="the first frame after a scene cut: its clip (window t-g..t+g) starts here")
    heatmap: list[list[float]] | str | None = Field(
        None, description="per-token scores (grid), or a base64 8-bit grayscale PNG at token resolution where "
                          "255 = twice the alert threshold's score (png), or none")
    boxes: list[HotRegion] | None = Field(None, description="with heatmap=boxes: the top_k hottest regions")


class SceneFit(BaseModel):
    frames: int = Field(description="frames of this stream scored so far")
    alert_share: float | None = Field(description="their share at or above the alert threshold")
    warning: str | None = Field(description="set when nearly every frame alerts: the model does not fit this "
                                            "scene (model.calibration.scene_check)")


class ScoreResponse(BaseModel):
    frames: list[FrameScore]
    stream_id: str | None = None
    scene: SceneFit | None = Field(None, description="with stream_id: does the stream fit the model's calibration")
    pending_frames: int = Field(0, description="with stream_id: frames waiting for their look-ahead")
    next_offset: int | None = Field(None, description="with stream_id: the frames the stream has so far, which is "
                                    "the offset of its next request (after flush=true: of a new clip, 0)")
    lookahead_frames: int = Field(description="frame t is scored once frame t+lookahead_frames is known "
                                              "(the model's context gap, 3 unless its scoring says otherwise)")
    model: str


class ErrorBody(BaseModel):
    error: str
    detail: Any


def loaded(request: Request, part: str) -> Any:
    """``app.state.<part>`` (the runtime, the camera manager) once the model has loaded, else 503."""
    value = getattr(request.app.state, part)
    if value is None:
        raise NotReady(f"the model is still loading ({request.app.state.startup_error or 'starting'})")
    return value


# Dependencies are ``async def``: FastAPI runs a plain ``def`` one in its thread pool, a thread hand-off
# per request per dependency (10% of the server's GIL time under load, by py-spy).
async def get_runtime(request: Request) -> ScoringRuntime:
    runtime: ScoringRuntime = loaded(request, "runtime")
    return runtime


async def require_api_key(request: Request) -> None:
    key = request.app.state.settings.api_key
    if key is None:
        return
    given = request.headers.get("x-api-key", "")
    if not secrets.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise Unauthorized("missing or wrong X-API-Key header")


Runtime = Annotated[ScoringRuntime, Depends(get_runtime)]
def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses: every error has the body ``{error, detail}``."""
    return {code: {"model": ErrorBody} for code in codes}


ERRORS = error_responses(400, 401, 404, 408, 413, 415, 422, 429, 500, 503, 504)
router = APIRouter()
MAX_TOP_K = 16
T = TypeVar("T")

SCORE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["frames"], "properties": {
                "frames": {"type": "array", "items": {"type": "string", "format": "binary"},
                           "description": "JPEG/PNG frames of one camera, in order"}}}},
            "application/x-npy": {"schema": {"type": "string", "format": "binary",
                                             "description": "uint8 array (N, H, W, 3), RGB"}},
        },
    }
}


class BodyBudget:
    """Request bytes all requests hold at once, from the first byte read until their frames are decoded
    (``max_inflight_bytes``). Each request's own limit bounds one body; this bounds a burst of them: a
    request that would go past it is refused at once (429) instead of being buffered until memory runs out."""

    def __init__(self, limit: int, on_refuse: Callable[[], None] = lambda: None) -> None:
        self.limit, self.held, self.on_refuse = limit, 0, on_refuse
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[Callable[[int], None]]:
        """A reservation grown with ``take(n)`` (Overloaded past the limit) and given back on exit."""
        taken = 0

        def take(n: int) -> None:
            nonlocal taken
            with self._lock:
                if self.held + n > self.limit:
                    self.on_refuse()
                    raise Overloaded(f"{self.held} bytes of other requests are being received or decoded "
                                     f"(max_inflight_bytes {self.limit}); retry shortly", headers={"Retry-After": "1"})
                self.held += n
                taken += n

        try:
            yield take
        finally:
            with self._lock:
                self.held -= taken


async def _read_body(request: Request, limit: int, take: Callable[[int], None], timeout_s: float) -> Body:
    """The body, within its own ``limit`` and ``timeout_s``, reserved in the in-flight budget."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _receive_body(request, limit, take)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s (body_timeout_s)") from None


async def _receive_body(request: Request, limit: int, take: Callable[[int], None]) -> Body:
    """All at once into one buffer when the Content-Length says how much (joining chunks held the
    body twice), else chunk by chunk as it arrives."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
        take(int(declared))
        buffer, size = bytearray(int(declared)), 0
        async for chunk in request.stream():
            if size + len(chunk) > len(buffer):
                raise BadRequest("the body is longer than its Content-Length")
            buffer[size : size + len(chunk)] = chunk
            size += len(chunk)
        if size != len(buffer):
            raise BadRequest(f"the body ended after {size} of the {len(buffer)} bytes its Content-Length says")
        return buffer
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


async def _frames_from_request(request: Request, runtime: ScoringRuntime, streamed: bool) -> np.ndarray:
    """The request's frames at model size. Before decoding them (the costliest work a request brings)
    the count is checked against ``max_frames_per_request`` (413, by each body's parser) and against
    the queue's room (429): an overloaded server refuses at once what it would refuse after decoding
    anyway. A ``streamed`` request (stream_id) may hold back up to the model's look-ahead (its context
    gap) of its frames, so it needs that much less room."""
    s = request.app.state.settings
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("multipart/form-data", "application/x-npy"):
        raise UnsupportedMediaType("send multipart/form-data with image files in field 'frames', "
                                   "or application/x-npy with a uint8 (N, H, W, 3) array")
    size, channels = runtime.bundle.image_size, runtime.bundle.channels
    held_back = runtime.bundle.context_gap if streamed else 0
    with request.app.state.body_budget.hold() as take:
        body = await _read_body(request, s.max_request_bytes, take, s.body_timeout_s)
        if ctype == "application/x-npy":
            array = npy_frames(body, s.max_frames_per_request, s.max_image_pixels)
            runtime.batcher.check_room(len(array) - held_back)
            return await asyncio.to_thread(rgb_to_frames, array, size, channels)
        images = multipart_files(body, request.headers["content-type"], "frames", s.max_frames_per_request,
                                 max_parts=s.max_frames_per_request + 16)
        if not images:
            raise BadRequest("no frames: send images in the multipart field 'frames'")
        runtime.batcher.check_room(len(images) - held_back)
        return await asyncio.to_thread(images_to_frames, images, size, channels, s.max_image_pixels)


async def _while_connected(request: Request, work: Awaitable[T]) -> T:
    """``work``, cancelled if the client hangs up first: its frames still queued leave the queue unrun
    (a client that gave up, e.g. on its own timeout, would otherwise still cost a batch slot each)."""
    task, gone = asyncio.ensure_future(work), asyncio.Event()

    async def watch() -> None:  # the body has been read: the next message is the client hanging up
        with contextlib.suppress(Exception):  # a server that cannot tell: the work just runs to its end
            while (await request.receive())["type"] != "http.disconnect":
                pass
            gone.set()
            task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if gone.is_set():
            request.app.state.metrics.rejected.labels(reason="client_closed").inc()
            raise ClientClosed("the client closed the connection before its frames were scored") from None
        raise
    finally:
        watcher.cancel()


def _frame_score(r: FrameResult, heatmap: str, scale: float, top_k: int, cut: bool) -> FrameScore:
    o = r.outputs
    hm: list[list[float]] | str | None = None
    boxes = None
    if heatmap == "boxes":
        boxes = [HotRegion(**region.to_dict()) for region in hot_regions(o["heatmap"], top_k)]
    elif heatmap == "grid":
        hm = np.round(o["heatmap"].astype(float), 6).tolist()
    elif heatmap == "png":
        hm = base64.b64encode(heatmap_png(o["heatmap"], scale)).decode()
    calibrated = float(o["calibrated"])
    return FrameScore(index=r.index, score=float(o["score"]), teacher_error=float(o["teacher_error"]),
                      discrepancy=float(o["discrepancy"]), calibrated=calibrated, is_anomaly=calibrated >= ALERT,
                      cut=cut, heatmap=hm, boxes=boxes)


@router.post("/v1/score", response_model=ScoreResponse, responses=ERRORS | error_responses(409),
             openapi_extra=SCORE_BODY, dependencies=[Depends(require_api_key)],
             summary="score consecutive frames of one camera")
async def score(
    request: Request,
    runtime: Runtime,
    heatmap: Annotated[Literal["none", "grid", "png", "boxes"], Query(description="heatmap form")] = "none",
    top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K, description="with heatmap=boxes: regions per frame")] = 3,
    stream_id: Annotated[str | None, Query(pattern=STREAM_ID_PATTERN,
                                           description="keep temporal context across requests")] = None,
    flush: Annotated[bool, Query(description="with stream_id: end of clip, score the frames still waiting")] = False,
    offset: Annotated[int | None, Query(ge=0, description="with stream_id: the stream index of this request's "
                                        "first frame, checked (409 offset_mismatch if the stream stands elsewhere)")]
    = None,
) -> ScoreResponse:
    """Frames t-g and t+g (g = ``lookahead_frames``, the model's context gap, 3 for the shipped model) come from the
    same request (edges clamped; a scene cut ends the clip as its edge would). With ``stream_id`` the context
    carries over between requests: frame t is returned once frame t+g has arrived, and ``flush=true`` ends the clip;
    chunked requests then give exactly the scores of one request; an empty body with ``flush=true`` ends a stream's
    clip without new frames. A chunk that fails (429, 500, 503, 504) leaves the context as it was: send it again."""
    for name, given in (("flush=true", flush), ("offset", offset is not None)):
        if given and stream_id is None:
            raise BadRequest(f"{name} needs a stream_id")
    if flush and request.headers.get("content-length") == "0":  # (flush has a stream_id: checked above)
        frames = np.empty((0, *runtime.bundle.image_size, runtime.bundle.channels), np.uint8)  # the clip ended
    else:
        frames = await _frames_from_request(request, runtime, streamed=stream_id is not None)
    clip = await _while_connected(request, runtime.score_clip(frames, stream_id, flush, offset))
    scale = runtime.heatmap_scale
    calibrated = [float(r.outputs["calibrated"]) for r in clip.results]
    for c in calibrated:
        runtime.metrics.score_distribution.labels(source="http").observe(c)
    scene = SceneFit(**clip.context.tally(calibrated)) if clip.context is not None else None
    return ScoreResponse(frames=[_frame_score(r, heatmap, scale, top_k, r.index in clip.cuts) for r in clip.results],
                         stream_id=stream_id, scene=scene, pending_frames=clip.pending, next_offset=clip.next_offset,
                         lookahead_frames=runtime.bundle.context_gap, model=runtime.bundle.graph.name)


@router.delete("/v1/score/streams/{stream_id}", status_code=204, responses=ERRORS,
               dependencies=[Depends(require_api_key)], summary="forget a stream_id's context")
async def drop_stream_context(stream_id: str, runtime: Runtime) -> Response:
    if not runtime.contexts.drop(stream_id):
        raise NotFound(f"no context for stream_id {stream_id!r}")
    return Response(status_code=204)


@router.get("/v1/model", summary="the model being served")
async def model_info(runtime: Runtime) -> dict[str, Any]:
    side = runtime.bundle.sidecar
    return {
        "file": runtime.bundle.graph.name, "backend": runtime.backend_name, "precision": runtime.precision,
        "resolution": list(runtime.bundle.image_size), "channels": runtime.bundle.channels,
        "heatmap_grid": list(runtime.bundle.grid), "lookahead_frames": runtime.bundle.context_gap,
        "config": side["model"], "scoring": side.get("scoring"), "calibration": side.get("calibration"),
        "max_batch_size": runtime.batcher.max_batch, "workers": len(runtime.backends),
        "code_version": side.get("code_version"), "readiness": runtime.readiness,
    }


@router.get("/healthz", summary="the process is alive and its inference workers run",
            responses={503: {"model": ErrorBody}}, response_model=None)
async def healthz(request: Request) -> dict[str, str] | JSONResponse:
    runtime: ScoringRuntime | None = request.app.state.runtime
    dead = runtime.batcher.dead_workers() if runtime is not None else 0
    if runtime is not None and dead:
        detail = f"{dead} of {len(runtime.backends)} inference workers have stopped (see the log); restart the process"
        return JSONResponse({"error": "unhealthy", "detail": detail}, status_code=503)
    return {"status": "alive"}


@router.get("/readyz", summary="ready: warmed up and the golden-clip parity check passed",
            responses={503: {"model": ErrorBody}})
async def readyz(request: Request) -> JSONResponse:
    runtime: ScoringRuntime | None = request.app.state.runtime
    dead = runtime.batcher.dead_workers() if runtime is not None else 0
    if runtime is not None and runtime.ready and not dead:
        return JSONResponse({"ready": True, **runtime.readiness})
    state = runtime.readiness if runtime is not None else {"state": request.app.state.startup_error or "loading"}
    if dead:
        state = {**state, "state": f"{dead} inference worker(s) stopped"}
    return JSONResponse({"error": "not_ready", "detail": state}, status_code=503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
