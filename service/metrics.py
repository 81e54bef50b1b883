"""Prometheus metrics (names per ../shared/reference/SERVING.md, prefix ``aedmae_``). Each app has its
own registry so tests can run several apps in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

import model

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "aedmae"
        self.http_requests = Counter(f"{p}_http_requests", "HTTP requests by route and status code",
                                     ["route", "code"], registry=r)
        self.http_duration = Histogram(f"{p}_http_request_duration_seconds", "HTTP request duration", ["route"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.http_in_flight = Gauge(f"{p}_http_requests_in_flight", "HTTP requests being served", registry=r)
        self.rejected = Counter(f"{p}_requests_rejected", "requests refused, by reason", ["reason"], registry=r)
        self.queue_depth = Gauge(f"{p}_queue_depth", "frames waiting for inference", registry=r)
        self.queue_wait = Histogram(f"{p}_queue_wait_seconds", "time a frame waits before its batch runs",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(f"{p}_batch_size", "frames per inference batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batches = Counter(f"{p}_batches", "batches by what closed them", ["trigger"], registry=r)
        self.inference_duration = Histogram(f"{p}_inference_duration_seconds", "backend time per batch",
                                            ["backend"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_frames = Counter(f"{p}_inference_frames", "frames scored by the backend", registry=r)
        self.inference_workers = Gauge(f"{p}_inference_workers", "inference workers (a backend instance each): "
                                       "rate(inference_duration_seconds_sum) over this is their busy share",
                                       registry=r)
        self.inference_workers_stopped = Gauge(f"{p}_inference_workers_stopped", "inference workers whose "
                                               "thread has ended (only a restart heals that)", registry=r)
        self.inference_errors = Counter(f"{p}_inference_errors", "failed batches, by reason", ["reason"],
                                        registry=r)
        self.model_ready = Gauge(f"{p}_model_ready", "1 once warm-up and the golden parity check passed",
                                 registry=r)
        self.model_info = Info(f"{p}_model", "the model being served", registry=r)
        self.build_info = Info(f"{p}_build", "aedmae build", registry=r)
        self.build_info.info({"version": model.__version__})
        self.anomaly_threshold = Gauge(f"{p}_anomaly_threshold", "calibrated alert threshold", registry=r)
        self.anomaly_threshold.set(0.5)
        # Known label values start at zero, so dashboards and alerts see series before the first event.
        for reason in ("queue_full", "deadline", "payload_too_large", "unsupported_media_type", "inflight_bytes",
                       "client_closed"):
            self.rejected.labels(reason=reason)
        for trigger in ("full", "timeout"):
            self.batches.labels(trigger=trigger)
        self.inference_errors.labels(reason="backend_error")
        self.frame_age = Histogram(f"{p}_frame_age_seconds", "camera frames: capture to score", ["stream"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.webhook_deliveries = Counter(f"{p}_webhook_deliveries", "event webhook POSTs by outcome", ["outcome"],
                                          registry=r)
        for outcome in ("delivered", "failed", "dropped"):
            self.webhook_deliveries.labels(outcome=outcome)
        self.score_distribution = Histogram(f"{p}_anomaly_score_distribution", "calibrated scores of scored frames",
                                            ["source"], buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
                                            registry=r)
