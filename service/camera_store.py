"""Cameras registered through the API, kept in a JSON file so that they survive a restart.

Only cameras added with ``POST /v1/streams`` live here; cameras of the config file come from the config
file. The file is rewritten whole on every change (a temporary file beside it, fsync, an atomic rename, fsync
of the folder), so a crash leaves either the old or the new list, never half of one; it is created readable by
its owner only, since camera URLs may carry credentials. A file that cannot be read or holds anything
but valid cameras stops the server at start (the operator fixes or removes it): starting with an empty
list would overwrite it at the next registration."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from model import durable
from model.errors import ConfigError
from service.settings import StreamSpec, problems

FORMAT_VERSION = 1


class CameraStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[StreamSpec]:
        """The stored cameras in registration order; none when the file does not exist yet.

        Raises:
            ConfigError: the file cannot be read, is not this format, or holds an invalid camera.
        """
        if not self.path.exists():
            return []
        where = f"camera_store {self.path}"
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"{where}: cannot read it ({e}); fix or remove the file") from None
        version, cameras = (doc.get("version"), doc.get("cameras")) if isinstance(doc, dict) else (None, None)
        if version != FORMAT_VERSION or not isinstance(cameras, list):
            raise ConfigError(f"{where}: not an aedmae camera store (expected {{\"version\": {FORMAT_VERSION}, "
                              "\"cameras\": [...]}}); fix or remove the file")
        specs: list[StreamSpec] = []
        for i, entry in enumerate(cameras):
            try:
                spec = StreamSpec.model_validate(entry)
            except ValidationError as e:
                raise ConfigError(f"{where}: camera {i} is invalid ({problems(e)}); fix or remove it") from None
            if any(s.id == spec.id for s in specs):
                raise ConfigError(f"{where}: camera id {spec.id!r} appears twice; remove one")
            specs.append(spec)
        return specs

    def save(self, specs: list[StreamSpec]) -> None:
        """Replace the stored list atomically. Raises OSError when the file cannot be written."""
        body = json.dumps({"version": FORMAT_VERSION, "cameras": [s.model_dump(mode="json") for s in specs]},
                          indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(body)
            durable.replace((tmp, self.path))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
