"""The command line: its parser (each subcommand's ``func`` names its handler in ``service.cli.COMMANDS``)
and its argument checks, numbers in range and output folders that can be made, each a one-line error
(exit 2) before any work starts."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from model.config import PRESETS
from model.cuts import CHANGE_LIMIT, MAX_CHANGE
from model.errors import ConfigError
from model.metrics import SMOOTHING_SIGMA_S

DESCRIPTION = ("aedmae: video anomaly detection with self-distilled masked auto-encoders: train, evaluate, "
               "score a video, calibrate, export and serve.")


def at_least(least: int, kind: type = int, most: float | None = None) -> Any:
    """An argparse type: a finite ``kind`` (int or float) >= ``least`` (and <= ``most``, when given), else
    a usage error (exit 2)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (math.isfinite(value) and value >= least):
            raise argparse.ArgumentTypeError(f"{text}: must be {least} or more")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{text}: must be {most:g} or less")
        return value
    return parse


def file_named(suffix: str) -> Any:
    """An argparse type for an output model file: not a folder, and ending in ``suffix``, which is how
    ``aedmae serve`` finds a graph in a folder (``*.onnx``) and picks its backend (``.engine``)."""
    def parse(text: str) -> str:
        if text.endswith(("/", os.sep)) or Path(text).is_dir():
            raise argparse.ArgumentTypeError(f"{text}: a folder; give the file's name, e.g. "
                                             f"{Path(text) / ('model' + suffix)}")
        if not text.endswith(suffix):
            raise argparse.ArgumentTypeError(f"{text}: the file's name must end in {suffix} (aedmae serve finds "
                                             f"and runs it by that)")
        return text
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


def _add_config_args(p: argparse.ArgumentParser, default_preset: str) -> None:
    p.add_argument("--preset", default=default_preset, choices=sorted(PRESETS),
                   help=f"configuration preset (default: {default_preset})")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set model.patch_size=8 --set train.epochs_teacher=3")
    p.add_argument("--cache-dir", help="decoded-frame cache (default ~/.cache/aedmae/frames or $AEDMAE_CACHE_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aedmae", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train encoder + teacher, then distil the student")
    p.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="frame folders (<root>/<video>/<frame>) or video files; repeatable")
    p.add_argument("--out", required=True, help="output folder for the checkpoint, log and train state")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/train_state.pt (without it, an OUT that holds a run is refused)")
    p.add_argument("--teacher", metavar="CKPT",
                   help="keep this checkpoint's encoder + teacher and train only the student (same architecture)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument("--eval-data", help="a labelled test set to record a learning curve on (never used to choose)")
    p.add_argument("--eval-every", type=at_least(1), default=10,
                   help="learning-curve points every N epochs and at the end of each stage (each one is a "
                        "synthetic validation, ~35 s for the ped2 preset on 2 cores, plus ~1 min with --eval-data)")
    _add_config_args(p, "quick")
    p.set_defaults(func="train")

    p = sub.add_parser("evaluate", help="frame-level AUC and pictures on a labelled test set")
    p.add_argument("--data", required=True,
                   help="test set folder (layout detected: ped2, ucsd, avenue, shanghai, generic)")
    p.add_argument("--model", help="checkpoint (default: the model that ships with aedmae)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--layout", default="auto", help="override layout detection")
    p.add_argument("--sigma", type=at_least(0, float), default=3.0,
                   help="temporal smoothing sigma, frames (default 3; 0: none)")
    p.add_argument("--delay", type=at_least(0), help="frames the online smoother waits for, 0 = causal "
                                             "(default: its whole window, 3 sigma, as the service does)")
    p.add_argument("--examples", nargs="*", help="videos to draw heatmap strips for (default: the first three)")
    p.add_argument("--ablations", action="store_true", help="also evaluate the scoring variants")
    p.add_argument("--cache-dir")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func="evaluate")

    p = sub.add_parser("score", help="score a video file or a folder of frames (no labels needed)")
    p.add_argument("input", help="video file or folder of frames")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--out", required=True)
    p.add_argument("--sigma-s", type=at_least(0, float), default=SMOOTHING_SIGMA_S,
                   help="smoothing sigma in seconds of footage, as a camera's events.smoothing_sigma_s "
                        f"(default {SMOOTHING_SIGMA_S:g}; 0: none)")
    p.add_argument("--delay-s", type=at_least(0, float),
                   help="seconds of later frames the smoothing waits for, 0 = causal (default: 3 sigma)")
    p.add_argument("--scene-cut-change", type=at_least(0, float, most=CHANGE_LIMIT), default=MAX_CHANGE, metavar="C",
                   help="a frame changed more than this from the one before starts a new clip (the server's "
                        "scene_cut_change; 0: off)")
    p.add_argument("--every", type=at_least(1), default=1, metavar="N",
                   help="score every frame (1) or one frame in N, N being the model's context gap (3 for the "
                        "shipped model: three times faster, each score the one its frame gets at full rate)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func="score")

    p = sub.add_parser("calibrate", help="refit a checkpoint's scoring statistics and calibration on normal footage")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", action="append", metavar="PATH", help="normal footage; repeatable")
    src.add_argument("--held-out-of", action="append", metavar="PATH",
                     help="the model's training footage: refit on its held-out tails, as training does; repeatable")
    p.add_argument("--out", required=True, help="folder for the recalibrated checkpoint")
    p.add_argument("--set", action="append", metavar="model.scoring.FIELD=VALUE")
    p.add_argument("--cache-dir")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func="calibrate")

    p = sub.add_parser("serve", help="the scoring server (HTTP frame batches, metrics); settings: AEDMAE_* env")
    p.add_argument("--model", help="model folder or .onnx/.engine file (default: the shipped model)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt", "torch"])
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, help="inference workers")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], help="torch: fp16/bf16 (CUDA), bf16 (bf16 CPUs)")
    p.add_argument("--config", help="JSON or TOML settings file (same as AEDMAE_CONFIG)")
    p.set_defaults(func="serve")

    p = sub.add_parser("healthcheck", help="exit 0 if the server these settings describe answers /healthz "
                       "(the containers' health check: port and HTTP or HTTPS from the same settings)")
    p.add_argument("--config", help="JSON or TOML settings file (same as AEDMAE_CONFIG)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")
    p.set_defaults(func="healthcheck")

    p = sub.add_parser("export", help="export the model to ONNX or a TensorRT engine")
    exp = p.add_subparsers(dest="target", required=True)
    e = exp.add_parser("onnx", help="checkpoint -> ONNX graph + JSON sidecar, checked against PyTorch")
    e.add_argument("--model", help="checkpoint (default: the shipped model)")
    e.add_argument("--out", required=True, type=file_named(".onnx"), help="FILE.onnx")
    e.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                   help="int8: static, weight products only (CPUs with VNNI); needs --int8-footage")
    e.add_argument("--int8-footage", help="int8: normal footage (the training videos) for the activation ranges")
    e.add_argument("--max-batch", type=at_least(1), default=32, help="largest batch the service will send (sidecar)")
    e.set_defaults(func="export_onnx")
    e = exp.add_parser("tensorrt", help="ONNX -> TensorRT engine for this GPU, checked against ONNX Runtime")
    e.add_argument("--onnx", required=True, help="FILE.onnx exported by `aedmae export onnx`")
    e.add_argument("--out", required=True, type=file_named(".engine"), help="FILE.engine")
    e.add_argument("--min-batch", type=at_least(1), default=1)
    e.add_argument("--opt-batch", type=at_least(1), default=8)
    e.add_argument("--max-batch", type=at_least(1), default=32)
    e.add_argument("--workspace-mb", type=at_least(1), default=2048)
    e.set_defaults(func="export_tensorrt")

    p = sub.add_parser("model-info", help="parameters and FLOPs per frame")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help="a checkpoint folder or file")
    g.add_argument("--preset", default="reference", choices=sorted(PRESETS),
                   help="a configuration preset (default: reference)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func="model_info")

    p = sub.add_parser("anomalies", help="write example training samples with synthetic anomalies as PNGs")
    p.add_argument("--data", action="append", required=True, metavar="PATH")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=at_least(1), default=8)
    p.add_argument("--seed", type=int, default=0)
    _add_config_args(p, "quick")
    p.set_defaults(func="anomalies")
    return parser
