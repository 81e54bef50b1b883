"""docker/ checked for real: hadolint, a compose binary, promtool, and a real Prometheus scraping a
real `aedmae serve` so that every metric the dashboard and the alerts name is one the service exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import free_port, npy_body, scene_frames, wait_for, wait_until_ready, write_video

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: scripts/setup.sh installs it")
        pytest.skip(f"{name} is not installed here (scripts/setup.sh installs it when run as root)")
    return path


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_hadolint_both_dockerfiles():
    r = run(tool("hadolint"), str(DOCKER / "Dockerfile.cpu"), str(DOCKER / "Dockerfile.gpu"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_file_is_valid():
    r = run(tool("docker-compose"), "-f", str(DOCKER / "compose.yaml"), "config", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    text = (DOCKER / "compose.yaml").read_text()
    for needle in ("profiles: [cpu]", "profiles: [gpu]", "prometheus", "grafana", "aedmae-models:", "aedmae-state:"):
        assert needle in text


def test_promtool_config_and_rules():
    promtool = tool("promtool")
    r = run(promtool, "check", "config", str(DOCKER / "prometheus" / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(promtool, "check", "rules", str(DOCKER / "prometheus" / "alerts.yml"))
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    r = run(promtool, "test", "rules", str(Path(__file__).with_name("alerts_test.yml")))  # what fires when
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_dashboard_json_is_generated():
    sys.path.insert(0, str(DOCKER / "grafana"))
    import build_dashboard

    committed = json.loads((DOCKER / "grafana" / "dashboards" / "aedmae.json").read_text())
    assert committed == build_dashboard.build(), "run python docker/grafana/build_dashboard.py"


def referenced_metrics() -> set[str]:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "aedmae.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    exprs += re.findall(r"expr: (.+)", (DOCKER / "prometheus" / "alerts.yml").read_text())
    names = set()
    for e in exprs:
        names.update(re.findall(r"\b(aedmae_[a-z_]+)", e))
    return names


@pytest.mark.slow
def test_real_prometheus_scrapes_every_referenced_metric(tiny_checkpoint, tmp_path):
    prometheus = tool("prometheus")
    port, prom_port = free_port(), free_port()
    serve = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--model", str(tiny_checkpoint),
                              "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{DOCKER / 'prometheus' / 'alerts.yml'}]\n"
        "scrape_configs:\n  - job_name: aedmae\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
    prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url, prom_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{prom_port}"
        wait_until_ready(url + "/readyz", serve)
        wait_until_ready(prom_url + "/-/ready", prom)
        body = npy_body(np.random.default_rng(0).integers(0, 256, (6, 48, 72, 3), np.uint8))
        for _ in range(5):  # traffic: scores, a bad request (rejection counters), metrics
            assert httpx.post(url + "/v1/score", content=body,
                              headers={"content-type": "application/x-npy"}).status_code == 200
            httpx.post(url + "/v1/score", content=b"x", headers={"content-type": "text/plain"})
        # a camera with an event 8 s in: Prometheus must see its counter at 0 first, for increase()
        clip = write_video(tmp_path / "camera.mp4", scene_frames(300, 96, 128, seed=7))
        camera = {"id": "cam1", "url": str(clip), "realtime": True,
                  "events": {"enter": 0, "exit": 0, "min_duration_s": 8.0}}
        assert httpx.post(url + "/v1/streams", json=camera).status_code == 201
        zero = 'aedmae_anomaly_events_total{stream="cam1"} == 0'
        assert wait_for(lambda: httpx.get(prom_url + "/api/v1/query", params={"query": zero})
                        .json()["data"]["result"], 8), "Prometheus did not scrape the new camera"
        assert wait_for(lambda: httpx.get(url + "/v1/streams/cam1").json()["events_total"] == 1, 30)
        names = referenced_metrics()
        assert {"aedmae_inference_frames_total", "aedmae_model_ready", "aedmae_queue_depth"} <= names
        missing = set(names)
        end = time.monotonic() + 30
        while missing and time.monotonic() < end:
            time.sleep(1)
            for name in sorted(missing):
                r = httpx.get(prom_url + "/api/v1/query", params={"query": f'{{__name__=~"{name}(_bucket)?"}}'})
                if r.json()["data"]["result"]:
                    missing.discard(name)
        assert not missing, f"named in the dashboard/alerts but not exported by aedmae serve: {sorted(missing)}"
        rules = httpx.get(prom_url + "/api/v1/rules").json()["data"]["groups"][0]["rules"]
        written = re.findall(r"^\s*- alert: (\w+)", (DOCKER / "prometheus" / "alerts.yml").read_text(), re.M)
        assert [r["name"] for r in rules] == written and all(r["health"] == "ok" for r in rules), rules
        dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "aedmae.json").read_text())
        assert dashboard["templating"]["list"][0]["query"]["query"] == "label_values(aedmae_stream_up, stream)"
        queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
        queries += [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"]]
        for title, expr in queries:  # "$stream" as Grafana sends it with every camera picked
            r = httpx.get(prom_url + "/api/v1/query", params={"query": expr.replace("$stream", ".*")})
            assert r.json()["status"] == "success", (title, expr, r.text)
        annotation = dashboard["annotations"]["list"][0]["expr"].replace("$stream", ".*")
        assert wait_for(lambda: httpx.get(prom_url + "/api/v1/query", params={"query": annotation})
                        .json()["data"]["result"], 20), "the camera's event shows as no annotation"
    finally:
        for p in (serve, prom):
            p.terminate()
            p.wait(30)


def test_scene_mismatch_alert_fires_where_the_scene_check_warns():
    """The alert rule's threshold is model.calibration.SCENE_ALERT_SHARE, written out in PromQL: the two
    must move together (both were 0.99 until session 49, 0.8 until session 52, now 0.86)."""
    from model.calibration import SCENE_ALERT_SHARE

    rules = (DOCKER / "prometheus" / "alerts.yml").read_text()
    rule = re.search(r"- alert: AedmaeCameraSceneMismatch\n(?:\s+#.*\n)*"
                     r"\s+expr: aedmae_stream_alert_share >= ([0-9.]+)", rules)
    assert rule and float(rule.group(1)) == SCENE_ALERT_SHARE, rule
