"""HTTP routes for cameras: register, list, describe, remove, reconnect; recent scores; events as
Server-Sent Events; event snapshots; the live MJPEG preview."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from service.errors import NotFound
from service.routes import error_responses, loaded, require_api_key
from service.settings import STREAM_ID_PATTERN, StreamSpec
from service.stream_hub import StreamManager

BOUNDARY = "aedmaeframe"
MJPEG = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
KEEPALIVE_S = 15.0
ERRORS = error_responses(400, 401, 404, 409, 422, 429, 503)
STORING = error_responses(400, 401, 404, 409, 422, 429, 500, 503)  # 500: the camera store could not be written


def picture_responses(media_type: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {media_type: {}}}, **error_responses(404)}


JPEG = picture_responses("image/jpeg")


async def get_manager(request: Request) -> StreamManager:
    manager: StreamManager = loaded(request, "streams")
    return manager


Manager = Annotated[StreamManager, Depends(get_manager)]
StreamId = Annotated[str, Path(pattern=STREAM_ID_PATTERN)]
router = APIRouter(tags=["cameras"])


@router.post("/v1/streams", status_code=201, responses=STORING, dependencies=[Depends(require_api_key)],
             summary="register a camera; it connects and starts scoring at once (and is kept in the camera "
                     "store, when one is set, across restarts)")
async def add_stream(spec: StreamSpec, manager: Manager) -> JSONResponse:
    stream = await asyncio.to_thread(manager.add, spec, True)
    return JSONResponse(stream.describe(), status_code=201, headers={"Location": f"/v1/streams/{spec.id}"})


@router.get("/v1/streams", summary="all cameras, with state, fps and connection quality")
async def list_streams(manager: Manager) -> dict[str, Any]:
    return {"streams": [s.describe(detail=False) for s in manager.list()]}


@router.get("/v1/streams/{stream_id}", responses=ERRORS, summary="one camera: counters, quality, latest score")
async def get_stream(stream_id: StreamId, manager: Manager) -> dict[str, Any]:
    return manager.get(stream_id).describe()


@router.delete("/v1/streams/{stream_id}", status_code=204, responses=STORING,
               dependencies=[Depends(require_api_key)],
               summary="stop a camera and forget it, in the camera store too (an open event ends)")
async def delete_stream(stream_id: StreamId, manager: Manager) -> Response:
    await asyncio.to_thread(manager.remove, stream_id)
    return Response(status_code=204)


@router.post("/v1/streams/{stream_id}/reconnect", status_code=202, responses=ERRORS,
             dependencies=[Depends(require_api_key)], summary="drop the connection and reconnect now")
async def reconnect_stream(stream_id: StreamId, manager: Manager) -> dict[str, Any]:
    stream = manager.get(stream_id)
    stream.reader.reconnect()
    return {"id": stream_id, "reconnecting": True}


@router.get("/v1/streams/{stream_id}/scores", responses=ERRORS, summary="recent scores of a camera")
async def stream_scores(
    stream_id: StreamId, manager: Manager,
    after: Annotated[int | None, Query(ge=0, description=(
        "seq of the last score seen: the ones recorded after it, oldest first, final only (their smoothed score "
        "and event filled in: about the smoothing delay behind the newest); poll with next_after: none lost "
        "or seen twice"))] = None,
    since: Annotated[float | None, Query(description="unix time: frames captured after it, oldest first, final "
                                                     "only")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 500,
) -> dict[str, Any]:
    return {"stream": stream_id, **manager.get(stream_id).scores(after, since, limit)}


@router.get("/v1/streams/{stream_id}/events", responses=ERRORS, summary="recent events of a camera")
async def stream_events(stream_id: StreamId, manager: Manager) -> dict[str, Any]:
    manager.get(stream_id)
    return {"stream": stream_id, "events": [e.to_dict() for e in manager.bus.events_of(stream_id)]}


@router.get("/v1/events", summary="anomaly events as Server-Sent Events (event: start | end)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "id, event and JSON data lines"}})
async def events(
    request: Request, manager: Manager,
    stream: Annotated[str | None, Query(pattern=STREAM_ID_PATTERN, description="only this camera")] = None,
    last_event_id: Annotated[int | None, Header(description="replay what came after this id")] = None,
) -> StreamingResponse:
    queue = manager.bus.subscribe(after=last_event_id or 0)

    async def messages() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                try:
                    seq, kind, event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if stream is None or event["stream"] == stream:
                    yield f"id: {seq}\nevent: {kind}\ndata: {json.dumps(event)}\n\n"
        finally:
            manager.bus.unsubscribe(queue)

    return StreamingResponse(messages(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/v1/events/{event_id}/snapshot.jpg", responses=JPEG,
            response_class=Response, summary="the event's peak frame with its heatmap")
async def event_snapshot(event_id: Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$")], manager: Manager) -> Response:
    event = manager.bus.find(event_id)
    if event is None or event.snapshot is None:
        raise NotFound(f"no snapshot for event {event_id!r} (only recent events keep one)")
    jpeg = await asyncio.to_thread(manager.snapshot_jpeg, event)
    return Response(jpeg, media_type="image/jpeg")


@router.get("/v1/streams/{stream_id}/preview.jpg", response_class=Response,
            responses=JPEG, summary="the latest scored frame, with heatmap")
async def preview_jpg(stream_id: StreamId, manager: Manager) -> Response:
    jpeg = await asyncio.to_thread(manager.preview_jpeg, manager.get(stream_id))
    if jpeg is None:
        raise NotFound(f"camera {stream_id!r} has not scored a frame yet")
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/v1/streams/{stream_id}/preview.mjpg", response_class=StreamingResponse,
            responses=picture_responses(MJPEG),
            summary="live preview for a browser: frames with the heatmap and score drawn (MJPEG)")
async def preview_mjpg(request: Request, stream_id: StreamId, manager: Manager) -> StreamingResponse:
    stream = manager.get(stream_id)
    period = 1.0 / request.app.state.settings.preview_fps

    async def parts() -> AsyncIterator[bytes]:
        seen = -1
        while not await request.is_disconnected() and manager.has(stream):
            if stream.seq != seen:
                seen = stream.seq
                jpeg = await asyncio.to_thread(manager.preview_jpeg, stream)
                if jpeg is not None:
                    yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                           .encode() + jpeg + b"\r\n")
            await asyncio.sleep(period)

    return StreamingResponse(parts(), media_type=MJPEG,
                             headers={"Cache-Control": "no-store"})
