"""The application's safety nets, in process: a library error raised by any route is a 400 in the
API's error shape, an exception no handler takes is counted as a 500 with nothing left in flight, and
shutdown stops the cameras. The same app, served by uvicorn, is what the live-server
tests run; here routes that fail on purpose are added to it."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from model.errors import DataError
from service.app import create_app
from service.settings import Settings, StreamSpec
from tests.conftest import wait_for


def test_library_errors_are_400s_and_unhandled_ones_are_counted_500s(tiny_checkpoint):
    app = create_app(Settings(model=tiny_checkpoint))

    def bad_data() -> None:
        raise DataError("frame 3 is not an image")

    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/bad-data", bad_data)
    app.add_api_route("/broken", broken)
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: no model is loaded
    r = client.get("/bad-data")
    assert (r.status_code, r.json()) == (400, {"error": "bad_request", "detail": "frame 3 is not an image"})
    assert client.get("/broken").status_code == 500
    text = generate_latest(app.state.metrics.registry).decode()
    assert 'aedmae_http_requests_total{code="400",route="/bad-data"} 1.0' in text
    assert 'aedmae_http_requests_total{code="500",route="/broken"} 1.0' in text
    assert "aedmae_http_requests_in_flight 0.0" in text


def test_shutdown_stops_the_cameras(tiny_checkpoint):
    camera = StreamSpec(id="door", url="rtsp://127.0.0.1:9/cam", open_timeout_s=0.5)
    app = create_app(Settings(model=tiny_checkpoint, cameras=[camera]))
    with TestClient(app) as client:
        assert wait_for(lambda: client.get("/readyz").status_code == 200, 60)
        (stream,) = app.state.streams.list()
        assert stream.reader.alive
    assert app.state.streams.list() == [] and not stream.reader.alive
