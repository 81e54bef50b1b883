"""A real uvicorn server on 127.0.0.1 serving a real model folder (tiny model, real ONNX Runtime)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.settings import Settings


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, ready_timeout_s: float = 60) -> LiveServer:
        self.thread.start()
        end = time.monotonic() + ready_timeout_s
        while not (self.server.started and self.server.servers):
            if time.monotonic() > end or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        while httpx.get(self.url + "/readyz").status_code != 200:
            if time.monotonic() > end:
                raise RuntimeError(f"server not ready: {httpx.get(self.url + '/readyz').text}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def runtime(self):  # type: ignore[no-untyped-def]
        return self.app.state.runtime


@contextmanager
def live_server(**settings: object) -> Iterator[LiveServer]:
    server = LiveServer(Settings(**settings)).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tiny_checkpoint) -> Iterator[LiveServer]:
    with live_server(model=tiny_checkpoint, max_batch_size=8, max_batch_delay_ms=5, max_frames_per_request=40,
                     max_request_bytes=2 << 20, max_image_pixels=1 << 20) as s:
        yield s
