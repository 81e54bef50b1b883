"""The FastAPI application: a table of contents. Settings are built in the factory; the model is
loaded, warmed up and parity-checked in the lifespan (in a thread: /healthz answers meanwhile,
/readyz says 503 until the model is ready); shutdown drains in-flight work."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

import model
from model.cpu import int8_dot_products
from model.errors import AedmaeError
from service import routes, stream_routes
from service.camera_store import CameraStore
from service.errors import ServiceError
from service.metrics import Metrics
from service.runtime import ScoringRuntime
from service.settings import Settings, load_settings
from service.stream_hub import StreamManager

log = logging.getLogger("aedmae.service")


def log_capacity(runtime: ScoringRuntime, camera_fps: float = 25.0) -> None:
    """What the start-up rate means for cameras, in the log: a warning where one worker cannot score
    even one camera that sheds to every context_gap-th frame (README, "Drop policy")."""
    rate = max(runtime.readiness["startup_frames_per_second"]["per_worker"])
    gap = runtime.bundle.context_gap
    line = (f"scored the golden clip at {rate:.1f} frames/s per worker after warm-up; a {camera_fps:.0f} fps "
            f"camera needs {camera_fps:.1f} frames/s, {camera_fps / gap:.1f} while it keeps one frame in {gap}")
    if rate >= camera_fps / gap:
        log.info("%s", line)
        return
    grids = runtime.bundle.grid_shifts
    remedy = (f"; the same weights scored on one token grid instead of {grids} cost 1/{grids} of the work "
              "(`aedmae calibrate --set model.scoring.grid_shifts=1`: README, model card)" if grids > 1 else "")
    log.warning("%s: this machine cannot keep up with one such camera with this model%s", line, remedy)


def _load(app: FastAPI, settings: Settings) -> None:
    try:
        runtime = ScoringRuntime(settings, app.state.metrics)
        log.info("model %s: backend %s (%s), %dx%d, max batch %d, %d worker(s), warm-up sizes %s",
                 runtime.bundle.graph, runtime.backend_name, runtime.precision, *runtime.bundle.image_size,
                 runtime.batcher.max_batch, len(runtime.backends), runtime.warmup_sizes())
        if runtime.precision == "int8" and not settings.device.startswith("cuda") and int8_dot_products() is False:
            log.warning("model %s is int8, but this CPU has no int8 dot-product instructions (VNNI, AMX): it "
                        "runs no faster than fp32 here; serve an fp32 export instead", runtime.bundle.graph)
        runtime.start()
        app.state.runtime = runtime
        log.info("ready: %s", runtime.readiness)
        log_capacity(runtime)
        app.state.streams = manager = StreamManager(runtime, settings, app.state.metrics)
        for spec in settings.cameras:  # a camera that cannot start is logged; the others still start
            try:
                manager.add(spec)
            except AedmaeError as e:
                log.error("camera %s from the config file not started: %s", spec.id, e)
        manager.restore(app.state.stored_cameras)
    except Exception as e:  # the process stays up and says why in /readyz
        app.state.startup_error = f"model failed to load: {e}"
        log.exception("model failed to load")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    loader = asyncio.create_task(asyncio.to_thread(_load, app, settings))
    app.state.loader = loader
    try:
        yield
    finally:
        await loader
        if app.state.streams is not None:
            await asyncio.to_thread(app.state.streams.stop)
        runtime: ScoringRuntime | None = app.state.runtime
        if runtime is not None:
            await asyncio.to_thread(runtime.stop)


class HttpMetrics:
    """Request counts, durations and in-flight requests by route and status code, as a plain ASGI
    middleware (Starlette's BaseHTTPMiddleware costs a task group and memory streams per request).
    A request counts from its arrival to the start of its response: a streamed body (SSE, MJPEG
    preview) is not in the duration, as before."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m, t0, open_ = self.metrics, time.perf_counter(), [True]
        m.http_in_flight.inc()

        def record(code: int) -> None:
            if open_[0]:
                open_[0] = False
                route = getattr(scope.get("route"), "path", "unmatched")
                m.http_in_flight.dec()
                m.http_requests.labels(route=route, code=str(code)).inc()
                m.http_duration.labels(route=route).observe(time.perf_counter() - t0)

        async def send_and_record(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            record(500)  # no response started: the error handler's 500 comes from outside this middleware


def _error_response(status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(title="aedmae", version=model.__version__, lifespan=lifespan,
                  description="Real-time video anomaly detection: per-frame anomaly scores and heatmaps.")
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()
    app.state.body_budget = routes.BodyBudget(
        settings.max_inflight_bytes, lambda: metrics.rejected.labels(reason="inflight_bytes").inc())
    app.state.runtime = None
    app.state.streams = None
    app.state.startup_error = None
    # read now, so that an unreadable camera store stops the server before it could be overwritten
    app.state.stored_cameras = CameraStore(settings.camera_store).load() if settings.camera_store else []
    app.include_router(routes.router)
    app.include_router(stream_routes.router)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status in (413, 415):
            app.state.metrics.rejected.labels(reason=exc.code).inc()
        return _error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(AedmaeError)
    async def aedmae_error(request: Request, exc: AedmaeError) -> JSONResponse:
        return _error_response(400, "bad_request", str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # The framework's own refusals (no such route, wrong method) in the same shape as ours,
        # e.g. {"error": "method_not_allowed", "detail": "Method Not Allowed"}, keeping its headers (Allow).
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        return _error_response(exc.status_code, code, exc.detail, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
        return _error_response(422, "invalid_request", detail)

    app.add_middleware(HttpMetrics, metrics=app.state.metrics)
    return app
