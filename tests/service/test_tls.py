"""HTTPS: the TLS settings are checked at start, and a real `aedmae serve` answers over TLS (with the
test pair in tests/service/tls: a self-signed certificate for 127.0.0.1, made for these tests only);
`aedmae healthcheck` finds a server over HTTP or HTTPS from the same settings; webhooks reach a
receiver whose certificate only webhook_ca_file vouches for."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from service.cli import main
from service.events import WebhookSender
from service.settings import Settings
from tests.conftest import QuietHandler, free_port, http_server, npy_body, wait_until_ready

TLS = Path(__file__).with_name("tls")
CERT, KEY = TLS / "cert.pem", TLS / "key.pem"
ROOT = Path(__file__).resolve().parents[2]


def test_tls_settings_are_a_loadable_pair_or_nothing(tmp_path):
    assert Settings(tls_certfile=CERT, tls_keyfile=KEY).tls_certfile == CERT
    with pytest.raises(ValidationError, match="tls_certfile and tls_keyfile go together"):
        Settings(tls_certfile=CERT)
    with pytest.raises(ValidationError, match=r"cannot load the TLS pair.*No such file"):
        Settings(tls_certfile=CERT, tls_keyfile=tmp_path / "missing.pem")
    with pytest.raises(ValidationError, match="cannot load the TLS pair"):  # a certificate is not a key
        Settings(tls_certfile=CERT, tls_keyfile=CERT)


@pytest.mark.slow
def test_healthcheck_asks_the_port_the_settings_name(server, monkeypatch, capsys):
    monkeypatch.setenv("AEDMAE_PORT", server.url.rsplit(":", 1)[1])
    assert main(["healthcheck"]) == 0
    monkeypatch.setenv("AEDMAE_PORT", str(free_port()))  # nothing listens there
    assert main(["healthcheck", "--timeout", "1"]) == 1
    assert "Connection refused" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_answers_over_https_only(tiny_checkpoint, monkeypatch):
    port = free_port()
    env = os.environ | {"AEDMAE_TLS_CERTFILE": str(CERT), "AEDMAE_TLS_KEYFILE": str(KEY)}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--model", str(tiny_checkpoint),
                             "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    trusted = ssl.create_default_context(cafile=str(CERT))
    url = f"https://127.0.0.1:{port}"
    try:
        wait_until_ready(url + "/readyz", proc, verify=trusted)
        frames = np.random.default_rng(0).integers(0, 256, (4, 48, 72, 3), np.uint8)
        r = httpx.post(url + "/v1/score", content=npy_body(frames), verify=trusted,
                       headers={"content-type": "application/x-npy"})
        assert r.status_code == 200 and len(r.json()["frames"]) == 4
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url + "/healthz")  # the system's trust store does not know the test certificate
        try:  # plain HTTP on the same port is not served
            plain = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
        except httpx.HTTPError:
            plain = None
        assert plain != 200
        for name, value in env.items():  # the container's health check, with the server's own settings
            if name.startswith("AEDMAE_TLS"):
                monkeypatch.setenv(name, value)
        monkeypatch.setenv("AEDMAE_PORT", str(port))
        assert main(["healthcheck"]) == 0
    finally:
        proc.terminate()
        proc.wait(30)


class Hook(QuietHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()


def test_webhook_trusts_the_ca_file_it_is_given(tmp_path):
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(CERT, KEY)
    outcomes: list[str] = []
    with http_server(Hook, tls=server_side) as httpd:
        url = f"https://127.0.0.1:{httpd.server_port}/hook"
        for ca_file in (None, CERT):  # the system's CAs do not know the test certificate; the file does
            sender = WebhookSender(url, 2.0, 0, outcomes.append, ca_file=ca_file)
            sender.send("start", {"id": "e1"})
            sender.close(timeout_s=10)  # delivers what is queued first
        assert outcomes == ["failed", "delivered"]
    with pytest.raises(ValidationError, match=r"webhook_ca_file\s+Value error, cannot load"):
        Settings(webhook_ca_file=tmp_path / "missing.pem")
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(ValidationError, match=r"webhook_ca_file\s+Value error, cannot load"):
        Settings(webhook_ca_file=empty)
