"""Generates grafana/dashboards/aedmae.json from the panel list below (run after editing it):

    python docker/grafana/build_dashboard.py

tests/docker checks that the committed JSON is what this script writes, and that every metric its
queries name returns series from a real Prometheus scraping a real `aedmae serve`.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent / "dashboards" / "aedmae.json"
DS = {"type": "prometheus", "uid": "prometheus"}

# (title, kind, unit, [(legend, PromQL)], width)
PANELS: list[tuple[str, str, str, list[tuple[str, str]], int]] = [
    ("Frames scored per second", "timeseries", "fps",
     [("total", "sum(rate(aedmae_inference_frames_total[1m]))")], 12),
    ("Model ready, and inference workers stopped (restart if above 0)", "stat", "none",
     [("ready", "min(aedmae_model_ready)"), ("workers stopped", "sum(aedmae_inference_workers_stopped)")], 6),
    ("Requests per second by status", "timeseries", "reqps",
     [("{{code}} {{route}}", "sum by (code, route) (rate(aedmae_http_requests_total[1m]))")], 6),
    ("Score request latency p50 / p99", "timeseries", "s",
     [("p50", 'histogram_quantile(0.5, sum by (le) (rate(aedmae_http_request_duration_seconds_bucket'
              '{route="/v1/score"}[5m])))'),
      ("p99", 'histogram_quantile(0.99, sum by (le) (rate(aedmae_http_request_duration_seconds_bucket'
              '{route="/v1/score"}[5m])))')], 12),
    ("Inference time per batch p50 / p99", "timeseries", "s",
     [("p50 {{backend}}", "histogram_quantile(0.5, sum by (le, backend) "
                          "(rate(aedmae_inference_duration_seconds_bucket[5m])))"),
      ("p99 {{backend}}", "histogram_quantile(0.99, sum by (le, backend) "
                          "(rate(aedmae_inference_duration_seconds_bucket[5m])))")], 12),
    ("Inference workers busy (near 100%: the model is the limit)",
     "timeseries", "percentunit",
     [("busy", "sum(rate(aedmae_inference_duration_seconds_sum[1m])) / sum(aedmae_inference_workers)")], 12),
    ("Batch size (mean) and batches by trigger", "timeseries", "none",
     [("mean batch size", "sum(rate(aedmae_batch_size_sum[5m])) / sum(rate(aedmae_batch_size_count[5m]))"),
      ("batches/s {{trigger}}", "sum by (trigger) (rate(aedmae_batches_total[5m]))")], 12),
    ("Queue depth and wait p99", "timeseries", "none",
     [("frames queued", "max(aedmae_queue_depth)"),
      ("wait p99 (s)", "histogram_quantile(0.99, sum by (le) (rate(aedmae_queue_wait_seconds_bucket[5m])))")], 12),
    ("Rejections by reason", "timeseries", "reqps",
     [("{{reason}}", "sum by (reason) (rate(aedmae_requests_rejected_total[5m]))"),
      ("inference errors {{reason}}", "sum by (reason) (rate(aedmae_inference_errors_total[5m]))")], 12),
    ("Calibrated anomaly scores (HTTP)", "heatmap", "none",
     [("{{le}}", "sum by (le) (rate(aedmae_anomaly_score_distribution_bucket[5m]))")], 12),
    ("Alert threshold and in-flight requests", "timeseries", "none",
     [("threshold", "max(aedmae_anomaly_threshold)"), ("in flight", "sum(aedmae_http_requests_in_flight)")], 12),
    # cameras ($stream: the cameras picked at the top of the dashboard)
    ("Camera frames per second (received / scored)", "timeseries", "fps",
     [("{{stream}} received", 'sum by (stream) (rate(aedmae_stream_frames_total{stage="received",stream=~"$stream"}'
                              '[1m]))'),
      ("{{stream}} scored", 'sum by (stream) (rate(aedmae_stream_frames_total{stage="scored",stream=~"$stream"}'
                            '[1m]))')],
     12),
    ("Camera up", "state-timeline", "none", [("{{stream}}", 'max by (stream) (aedmae_stream_up{stream=~"$stream"})')],
     12),
    ("Anomaly score per camera (events as annotations), and the share of its recent frames alerting "
     "(near 1: the model does not fit the scene)", "timeseries", "none",
     [("{{stream}}", 'max by (stream) (aedmae_anomaly_score{stream=~"$stream"})'),
      ("threshold", "max(aedmae_anomaly_threshold)"),
      ("{{stream}} share alerting", 'max by (stream) (aedmae_stream_alert_share{stream=~"$stream"})')], 24),
    ("Reconnects, stalls and scene cuts per camera (1h)", "timeseries", "none",
     [("{{stream}} reconnects", 'sum by (stream) (increase(aedmae_stream_reconnects_total{stream=~"$stream"}[1h]))'),
      ("{{stream}} stalls", 'sum by (stream) (increase(aedmae_stream_stalls_total{stream=~"$stream"}[1h]))'),
      ("{{stream}} scene cuts",
       'sum by (stream) (increase(aedmae_stream_scene_cuts_total{stream=~"$stream"}[1h]))')], 8),
    ("Dropped camera frames by reason", "timeseries", "fps",
     [("{{stream}} {{reason}}", 'sum by (stream, reason) '
                                '(rate(aedmae_stream_frames_dropped_total{stream=~"$stream"}[5m]))')], 8),
    ("Frame age p99 (capture to score)", "timeseries", "s",
     [("{{stream}}", 'histogram_quantile(0.99, sum by (le, stream) '
                     '(rate(aedmae_frame_age_seconds_bucket{stream=~"$stream"}[5m])))')], 8),
    ("Anomaly events (last hour) and webhook deliveries", "timeseries", "none",
     [("{{stream}} events", 'sum by (stream) (increase(aedmae_anomaly_events_total{stream=~"$stream"}[1h]))'),
      ("webhook {{outcome}}", "sum by (outcome) (increase(aedmae_webhook_deliveries_total[1h]))")], 24),
]
STREAM_VARIABLE = {
    "name": "stream", "label": "camera", "type": "query", "datasource": DS,
    "definition": "label_values(aedmae_stream_up, stream)",
    "query": {"query": "label_values(aedmae_stream_up, stream)", "refId": "cameras"},
    "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
    "current": {"text": "All", "value": "$__all"},
}
EVENT_ANNOTATION = {
    "name": "Anomaly events", "datasource": DS, "enable": True, "iconColor": "red", "step": "15s",
    "expr": 'increase(aedmae_anomaly_events_total{stream=~"$stream"}[1m]) > 0',
    "titleFormat": "anomaly event", "textFormat": "camera {{stream}}", "tagKeys": "stream",
}


def panel(i: int, title: str, kind: str, unit: str, targets: list[tuple[str, str]], width: int,
          pos: tuple[int, int]) -> dict:
    return {
        "id": i + 1, "type": kind, "title": title, "datasource": DS,
        "gridPos": {"x": pos[0], "y": pos[1], "w": width, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(65 + k), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for k, (legend, expr) in enumerate(targets)],
    }


def build() -> dict:
    panels, x, y = [], 0, 0
    for i, (title, kind, unit, targets, width) in enumerate(PANELS):
        if x + width > 24:
            x, y = 0, y + 8
        panels.append(panel(i, title, kind, unit, targets, width, (x, y)))
        x += width
    return {
        "uid": "aedmae", "title": "aedmae: video anomaly detection service", "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "10s", "time": {"from": "now-1h", "to": "now"}, "tags": ["aedmae"],
        "templating": {"list": [STREAM_VARIABLE]}, "annotations": {"list": [EVENT_ANNOTATION]}, "panels": panels,
    }


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
