"""Service settings: one pydantic ``Settings``, from (highest first) constructor arguments, ``AEDMAE_*``
environment variables, then a JSON or TOML config file named by ``AEDMAE_CONFIG``. Built in the app
factory, never at import."""

from __future__ import annotations

import json
import logging
import os
import ssl
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from model.cuts import CHANGE_LIMIT, MAX_CHANGE
from model.errors import ConfigError
from model.metrics import SMOOTHING_SIGMA_S

STREAM_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")


class EventSettings(BaseModel):
    """When a camera raises an anomaly event. Scores are calibrated (0.5 = the training footage's
    alert threshold) and smoothed over ``smoothing_sigma_s`` before these thresholds apply: a Gaussian
    over the past and ``smoothing_delay_s`` of later frames, so a frame's smoothed score (and its
    event verdict) is known that much later. The default waits for the whole window (3 sigma, 0.6 s):
    the same smoothing as `aedmae evaluate`'s smoothed AUC; 0 is causal (no wait, less accurate)."""

    model_config = ConfigDict(extra="forbid")

    enter: float = Field(0.7, ge=0, le=1, description="an event starts once the smoothed score stays >= this ...")
    exit: float = Field(0.5, ge=0, le=1, description="... and ends once it falls below this")
    min_duration_s: float = Field(0.4, ge=0, le=60, description="... for at least this long (both ways)")
    cooldown_s: float = Field(5.0, ge=0, le=3600, description="no new event this soon after the previous one ended")
    smoothing_sigma_s: float = Field(SMOOTHING_SIGMA_S, ge=0, le=10, description="Gaussian smoothing sigma, seconds")
    smoothing_delay_s: float | None = Field(None, ge=0, le=30,
                                            description="seconds of later frames the smoothing waits for "
                                                        "(default: 3 sigma, the whole window; 0: causal)")

    @model_validator(mode="after")
    def _hysteresis(self) -> EventSettings:
        if self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must not exceed enter ({self.enter})")
        return self


class StreamSpec(BaseModel):
    """A camera: the body of POST /v1/streams, and an entry of ``cameras`` in the config file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=STREAM_ID_PATTERN, description="camera id (the `stream` metric label)")
    url: str = Field(min_length=1, max_length=2048, repr=False,  # may hold credentials: never in a repr
                     description="rtsp://, rtsps://, http(s):// or a local video file (path or file://)")
    fps: float | None = Field(None, gt=0, le=120, description="score this many frames per second (default: all)")
    stall_timeout_s: float = Field(10.0, ge=0.5, le=600, description="no frame for this long: stalled")
    open_timeout_s: float = Field(5.0, ge=0.5, le=120)
    staleness_s: float | None = Field(None, ge=0.01, le=60,
                                      description="live cameras: a frame not scored this soon after its look-ahead "
                                                  "frame arrived is dropped (default: stream_staleness_s)")
    realtime: bool = Field(False, description="files: play at the file's own frame rate, like a live camera")
    events: EventSettings = Field(default_factory=EventSettings)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        scheme = v.split("://", 1)[0].lower() if "://" in v else None
        if scheme is not None and scheme not in URL_SCHEMES:
            raise ValueError(f"unsupported URL scheme {scheme!r}: use one of {', '.join(URL_SCHEMES)}")
        return v

    @property
    def file_path(self) -> Path | None:
        """The local file this camera reads, or None for a network stream."""
        if self.url.startswith("file://"):
            return Path(self.url[len("file://"):])
        return None if "://" in self.url else Path(self.url)


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the file named by AEDMAE_CONFIG (.json or .toml)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("AEDMAE_CONFIG")
        if not path:
            return {}
        p = Path(path)
        kind = "TOML" if p.suffix == ".toml" else "JSON"
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"AEDMAE_CONFIG={path}: cannot read the config file ({e})") from None
        try:
            data = tomllib.loads(text) if kind == "TOML" else json.loads(text)
        except ValueError as e:  # e.g. YAML: say which formats there are, not only where JSON choked
            raise ConfigError(f"AEDMAE_CONFIG={path}: not a valid {kind} file ({e}); config files are JSON, or "
                              "TOML when named *.toml") from None
        if not isinstance(data, dict):
            raise ConfigError(f"AEDMAE_CONFIG={path}: the config file must hold an object of settings "
                              f"(keys and values), not a {type(data).__name__}")
        return data


def _loads(what: str, load: Callable[[], object]) -> None:
    """Build an ssl context from files (``load``); one that is missing, unreadable, not PEM or a key that
    is not its certificate's is a ValueError naming ``what``, so the server stops at start in one line."""
    try:
        load()
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        raise ValueError(f"cannot load {what}: {getattr(e, 'strerror', None) or e}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AEDMAE_", extra="forbid")

    model: Path | None = Field(None, description="model folder or .onnx/.engine file (default: the shipped model)")
    backend: Literal["auto", "onnxruntime", "tensorrt", "torch"] = "auto"
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="torch backend: fp16/bf16 on CUDA, bf16 also on CPUs with native bf16")
    cuda_graphs: bool = Field(True, description="torch backend on CUDA: replay captured graphs per batch size")
    max_batch_size: int = Field(16, ge=1, le=1024)
    max_batch_delay_ms: float = Field(5.0, ge=0, description="waits this long only while a batch is not full")
    queue_capacity: int = Field(512, ge=1, description="frames waiting for inference, at most")
    workers: int = Field(1, ge=1, le=64, description="inference workers (GPU: one CUDA stream / context each)")
    threads_per_worker: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0: cores / workers)")
    request_timeout_s: float = Field(30.0, gt=0, description="deadline of a request's frames in the queue")
    max_frames_per_request: int = Field(256, ge=1)
    max_request_bytes: int = Field(64 << 20, ge=1024)
    body_timeout_s: float = Field(60.0, gt=0, description="a request body must arrive within this (408), so "
                                  "that a stalled upload cannot hold its share of max_inflight_bytes")
    max_inflight_bytes: int = Field(512 << 20, ge=1024, description="request bodies held at once by all requests "
                                    "together (read, then decoded); a request past it gets 429")
    max_image_pixels: int = Field(4096 * 4096, ge=64)
    api_key: SecretStr | None = Field(None, description="required in X-API-Key for mutating calls when set")
    stream_context_ttl_s: float = Field(300.0, gt=0, description="idle stream_id contexts are dropped after this")
    max_stream_contexts: int = Field(1024, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    tls_certfile: Path | None = Field(None, description="serve HTTPS with this PEM certificate (chain)")
    tls_keyfile: Path | None = Field(None, description="the PEM private key of tls_certfile")
    cameras: list[StreamSpec] = Field(default_factory=list, description="cameras started with the server")
    camera_store: Path | None = Field(None, description="JSON file that keeps the cameras registered through the "
                                      "API across restarts (default: none, they last as long as the process)")
    max_streams: int = Field(64, ge=1, le=4096, description="cameras registered at once, at most")
    stream_staleness_s: float = Field(1.0, gt=0, le=60,
                                      description="live frames waiting longer than this (after their look-ahead "
                                                  "frame arrived) are dropped")
    max_pending_per_stream: int = Field(8, ge=1, le=1024,
                                        description="a camera's frames queued for inference, at most; when "
                                                    "more arrive the oldest is dropped (freshest first)")
    stream_shedding: bool = Field(True, description="a live camera whose frames are being superseded keeps "
                                  "one frame in g only (g the model's context gap, 3 for the shipped model; the "
                                  "same raw scores for those frames) until it "
                                  "keeps up: an overloaded server then scores at its capacity instead of "
                                  "collapsing")
    scene_cut_change: float = Field(MAX_CHANGE, ge=0, le=CHANGE_LIMIT,
                                    description="a frame (camera or /v1/score) that changed more than this from "
                                                "the one before (model.cuts.picture_change) is a scene cut: the "
                                                "window, smoothing and any open event restart there (0: off)")
    stream_history: int = Field(3000, ge=10, le=1_000_000, description="recent scores kept per camera")
    allow_file_streams: bool = Field(True, description="allow local video files as cameras (recorded clips)")
    webhook_url: str | None = Field(None, description="POST every event start and end here (JSON): http(s)://"
                                                      "[user:password@]host[:port]/path; a user and password in "
                                                      "it go as HTTP Basic auth")
    webhook_timeout_s: float = Field(5.0, gt=0, le=120)
    webhook_retries: int = Field(3, ge=0, le=20)
    webhook_ca_file: Path | None = Field(None, description="PEM certificates to trust for an https webhook_url "
                                         "(an internal CA, a self-signed receiver) instead of the system's")
    preview_fps: float = Field(5.0, gt=0, le=30, description="MJPEG preview frames per second, at most")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "cpu" and not (v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit())):
            raise ValueError("device must be cpu, cuda or cuda:N")
        return v

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, v: str | None) -> str | None:
        if v is not None:
            from urllib.parse import urlsplit

            try:
                parts = urlsplit(v)
                parts.port  # noqa: B018  (raises on a port that is not a number)
            except ValueError:
                raise ValueError("not a URL: expected http(s)://[user:password@]host[:port]/path") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("expected http(s)://[user:password@]host[:port]/path")
        return v

    @field_validator("camera_store")
    @classmethod
    def _camera_store(cls, v: Path | None) -> Path | None:
        if v is not None:
            if v.is_dir():
                raise ValueError(f"{v} is a folder: name a file in it, e.g. {v / 'cameras.json'}")
            if not v.parent.is_dir():
                raise ValueError(f"{v.parent} is not a folder: create it first")
        return v

    @model_validator(mode="after")
    def _tls_pair_loads(self) -> Settings:
        """Both TLS files or neither, and a pair that loads: a bad pair stops the server at start, in one
        line, rather than after warm-up."""
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together: give both (HTTPS) or neither (HTTP)")
        if self.tls_certfile is not None and self.tls_keyfile is not None:
            cert, key = self.tls_certfile, self.tls_keyfile
            _loads(f"the TLS pair {cert}, {key}",
                   lambda: ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key))
        return self

    @field_validator("webhook_ca_file")
    @classmethod
    def _webhook_ca_file(cls, v: Path | None) -> Path | None:
        if v is not None:
            _loads(str(v), lambda: ssl.create_default_context(cafile=v))
        return v

    @model_validator(mode="after")
    def _budget_fits_a_request(self) -> Settings:
        if self.max_inflight_bytes < self.max_request_bytes:
            raise ValueError(f"max_inflight_bytes ({self.max_inflight_bytes}) must be at least max_request_bytes "
                             f"({self.max_request_bytes}), or the largest allowed request could never be received")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConfigFileSource(settings_cls)

    def model_path(self) -> Path:
        if self.model is not None:
            return self.model
        from model.shipped import shipped_model

        return shipped_model()

    def intra_op_threads(self) -> int:
        if self.threads_per_worker:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // self.workers)


SECRET_HINTS = ("url", "key", "secret", "token", "password", "header", "auth")  # values never echoed


def problems(e: ValidationError) -> str:
    """A pydantic error as one line: ``field.sub: message (got value)`` for each problem; the value is
    left out for anything that may carry credentials (camera and webhook URLs, keys)."""
    parts = []
    for err in e.errors():
        where = ".".join(map(str, err["loc"]))
        value = err.get("input")
        shown = where and isinstance(value, int | float | str) and not any(h in where.lower() for h in SECRET_HINTS)
        message = err["msg"].removeprefix("Value error, ")  # a check across fields: its message says it all
        parts.append(f"{where}: {message}" if where else message)
        parts[-1] += f" (got {value!r})" if shown else ""
    return "; ".join(parts)


# AEDMAE_* variables that are not settings: the config file's name, the frame cache (model/frames.py)
# and scripts/'s virtual environment and torch requirement.
OTHER_VARIABLES = ("AEDMAE_CONFIG", "AEDMAE_CACHE_DIR", "AEDMAE_VENV", "AEDMAE_TORCH")


def load_settings(**overrides: Any) -> Settings:
    """``Settings`` from the command line's ``overrides``, ``AEDMAE_*`` variables and the config file;
    a wrong value is a ConfigError naming the setting and the three places it can come from. An
    ``AEDMAE_*`` variable that names no setting (a typo) is logged as ignored: the config file
    refuses unknown keys, but the environment may hold variables meant for other runs."""
    unknown = sorted(k for k in os.environ if k.upper().startswith("AEDMAE_") and k.upper() not in OTHER_VARIABLES
                     and k[len("AEDMAE_"):].lower() not in Settings.model_fields)
    if unknown:
        logging.getLogger("aedmae.service").warning("ignoring %s: not a setting (the README's Settings section "
                                                    "lists them)", ", ".join(unknown))
    try:
        return Settings(**overrides)
    except ValidationError as e:
        where = f"the config file {os.environ['AEDMAE_CONFIG']}" if os.environ.get("AEDMAE_CONFIG") else ""
        sources = ", ".join(x for x in ("the command line", "AEDMAE_* environment variables", where) if x)
        raise ConfigError(f"invalid settings: {problems(e)} (from {sources})") from None
