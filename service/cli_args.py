"""The command line's argument checks: numbers in range and output folders that can be made, each a
one-line error (exit 2) before any work starts."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from model.errors import ConfigError


def at_least(least: int, kind: type = int) -> Any:
    """An argparse type: a finite ``kind`` (int or float) >= ``least``, else a usage error (exit 2)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (math.isfinite(value) and value >= least):
            raise argparse.ArgumentTypeError(f"{text}: must be {least} or more")
        return value
    return parse


OUTPUT_FOLDER_COMMANDS = ("train", "evaluate", "score", "calibrate", "anomalies")  # their --out is a folder


def writable_folders(args: argparse.Namespace) -> None:
    """Check that the output and cache folders exist or can be made, without making them (a failed
    command leaves nothing behind), so a path that cannot be one is a one-line error before the work
    starts, not a traceback after it."""
    folders = [args.out] if args.command in OUTPUT_FOLDER_COMMANDS else []
    folders += [args.cache_dir] if getattr(args, "cache_dir", None) else []
    for folder in map(Path, folders):
        existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError(f"{folder}: cannot be a folder: {existing} is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{folder}: cannot write in {existing} (permission denied)")
