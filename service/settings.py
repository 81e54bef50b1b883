"""Service settings: one pydantic ``Settings``, from (highest first) constructor arguments, ``AEDMAE_*``
environment variables, then a JSON or TOML config file named by ``AEDMAE_CONFIG``. Built in the app
factory, never at import."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from model.errors import ConfigError


class CameraSettings(BaseModel):
    """A camera declared in the config file; it starts with the server."""

    id: str
    url: str
    fps: float | None = None
    stall_timeout_s: float = 10.0


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the file named by AEDMAE_CONFIG (.json or .toml)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("AEDMAE_CONFIG")
        if not path:
            return {}
        p = Path(path)
        try:
            text = p.read_text()
            return tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as e:
            raise ConfigError(f"AEDMAE_CONFIG={path}: cannot read the config file ({e})") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AEDMAE_", extra="forbid")

    model: Path | None = Field(None, description="model folder or .onnx/.engine file (default: the shipped model)")
    backend: Literal["auto", "onnxruntime", "tensorrt", "torch"] = "auto"
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    precision: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="torch backend on CUDA only")
    cuda_graphs: bool = Field(True, description="torch backend on CUDA: replay captured graphs per batch size")
    max_batch_size: int = Field(16, ge=1, le=1024)
    max_batch_delay_ms: float = Field(5.0, ge=0, description="waits this long only while a batch is not full")
    queue_capacity: int = Field(512, ge=1, description="frames waiting for inference, at most")
    workers: int = Field(1, ge=1, le=64, description="inference workers (GPU: one CUDA stream / context each)")
    threads_per_worker: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0: cores / workers)")
    request_timeout_s: float = Field(30.0, gt=0, description="deadline of a request's frames in the queue")
    max_frames_per_request: int = Field(256, ge=1)
    max_request_bytes: int = Field(64 << 20, ge=1024)
    max_image_pixels: int = Field(4096 * 4096, ge=64)
    api_key: SecretStr | None = Field(None, description="required in X-API-Key for mutating calls when set")
    stream_context_ttl_s: float = Field(300.0, gt=0, description="idle stream_id contexts are dropped after this")
    max_stream_contexts: int = Field(1024, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    cameras: list[CameraSettings] = Field(default_factory=list)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "cpu" and not (v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit())):
            raise ValueError("device must be cpu, cuda or cuda:N")
        return v

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
