"""The ``aedmae`` command: a thin dispatcher. Every subcommand imports what it needs lazily, so
``aedmae serve`` never imports training code (or torch, for an ONNX model)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.cpu import reuse_freed_memory
from model.errors import AedmaeError, ConfigError, DataError
from service.cli_args import build_parser, writable_folders

if TYPE_CHECKING:  # settings (pydantic) are imported by the commands that need them
    from service.settings import Settings

log = logging.getLogger("aedmae")


def _configure(args: argparse.Namespace) -> tuple[object, object]:
    from model.config import apply_overrides, preset

    model_cfg, train_cfg = preset(args.preset)
    return apply_overrides(model_cfg, train_cfg, args.set or [])


def cmd_train(args: argparse.Namespace) -> int:
    from model import checkpoint
    from model.config import to_dict
    from model.evaluation import learning_curve_hook
    from model.training import Trainer

    model_cfg, train_cfg = _configure(args)
    out = Path(args.out)
    _check_train_out(out, args.resume)
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger("aedmae"), logging.getLogger("model")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    try:
        log.info("train: data=%s out=%s preset=%s", args.data, out, args.preset)
        log.info("model config: %s", json.dumps(to_dict(model_cfg)))
        log.info("train config: %s", json.dumps(to_dict(train_cfg)))
        trainer = Trainer(args.data, out, model_cfg, train_cfg, cache_dir=args.cache_dir,  # type: ignore[arg-type]
                          progress=not args.no_progress)
        trainer.epoch_hook = learning_curve_hook(trainer, args.eval_data, args.eval_every)
        log.info("data: %s", json.dumps(trainer.data_summary))
        summary = trainer.run(resume=args.resume, teacher=args.teacher)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
    for name, stage in summary["stages"].items():
        print(f"{name:8s} {stage['epochs']} epochs, {stage['steps']} steps, {stage['frames_per_second']:.1f} "
              f"frames/s, final loss {stage['losses'][-1]:.5f}")
    print(f"checkpoint: {out / 'model.safetensors'}")
    meta = checkpoint.read_meta(out)
    print(calibration_summary(meta["calibration"], tails_only=not trainer.cfg.holdout_videos))
    print(serve_hint(out))
    return 0


def _check_train_out(out: Path, resume: bool) -> None:
    """A run's folder is never written over by mistake: without --resume, one that holds a run (its
    train_state.pt, or a finished checkpoint) is refused, since the first epoch would overwrite the
    state an interrupted run resumes from; with --resume, there must be a state to resume from (a
    mistyped --out would otherwise start from scratch, quietly)."""
    from model.checkpoint import is_checkpoint
    from model.training import STATE

    state = out / STATE
    if resume and not state.is_file():
        raise ConfigError(f"{out}: no {STATE} to resume from; leave out --resume to start a run there")
    if not resume and (state.is_file() or is_checkpoint(out)):
        held = f"an interrupted or finished run ({STATE})" if state.is_file() else "a trained checkpoint"
        raise ConfigError(f"{out} already holds {held}: pass --resume to continue it, or choose another --out "
                          "(or delete that folder) to start over")


def serve_hint(folder: Path) -> str:
    """How to serve a checkpoint folder just written (its graph, if any, is now stale)."""
    return (f"to serve it: aedmae export onnx --model {folder} --out {folder / 'model.onnx'} "
            f"&& aedmae serve --model {folder}")


def calibration_summary(cal: dict[str, Any], tails_only: bool) -> str:
    """The calibration's line, and what its false-alarm rate is worth when it was fitted on the tails
    of the training videos only (the same people the model trained on)."""
    far = cal.get("false_alarm_rate")
    line = (f"threshold {cal['threshold']:.6g} (quantile {cal['quantile']}), median {cal['median']:.6g}, "
            + ("no cross-validated false-alarm rate" if far is None else
               f"false-alarm rate {far:.3g} cross-validated over {cal.get('cross_validated_over', 'videos')}"))
    if tails_only and cal.get("held_out"):
        line += ("\nnote: fitted on the held-out tails of the training videos, i.e. the people the model "
                 "trained on; on whole videos it never saw, such a threshold let through 5-8x its stated rate "
                 "(benchmarks/RESULTS.md, 'Footage the model never saw'). For an honest threshold, calibrate on "
                 "normal footage it did not train on (aedmae calibrate --data) or train with train.holdout_videos.")
    return line


def cmd_evaluate(args: argparse.Namespace) -> int:
    from model.report import format_table, run_evaluation

    metrics = run_evaluation(_model_path(args.model), args.data, args.out, layout=args.layout, sigma=args.sigma,
                             examples=args.examples, cache_dir=args.cache_dir, progress=not args.no_progress,
                             ablations=args.ablations, delay=args.delay)
    print(format_table(metrics))
    print(f"written: {Path(args.out) / 'metrics.json'}, scores.csv, roc.png, timelines.png, heatmaps_*.png")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from model.scorevideo import score_video

    result = score_video(_model_path(args.model), args.input, args.out, sigma_s=args.sigma_s, delay_s=args.delay_s,
                         progress=not args.no_progress, max_change=args.scene_cut_change, every=args.every)
    of = f" (one in {args.every} of {result['frames_decoded']})" if args.every > 1 else ""
    print(f"{result['frames']} frames scored{of}, {result['alert_frames']} above the alert threshold (smoothed); "
          f"written to {result['out']}: scores.csv, scores.json, annotated.mp4, timeline.png")
    if result["scene_cuts"]:
        print(f"scene cuts before frames {result['scene_cuts']}: each part scored as a clip of its own "
              "(column `cut` marks their first frames)")
    for warning in (result["decode_warning"], result["scene"]["warning"]):
        if warning:
            print(f"aedmae score: warning: {warning}", file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Refit token statistics + calibration of a checkpoint on normal footage, optionally with a
    different scoring config, writing a new checkpoint folder."""
    import dataclasses

    import numpy as np

    from model import checkpoint
    from model.config import ScoringConfig, TrainConfig, apply_overrides
    from model.dataset import load_segments
    from model.evaluation import fit_scorer, fit_scorer_on_segments
    from model.frames import FrameCache, default_cache_dir, discover

    net, meta = checkpoint.load(_model_path(args.model))
    cfg = net.cfg
    if args.set:
        cfg, _ = apply_overrides(cfg, checkpoint.train_config(meta) or TrainConfig(), args.set)
        if dataclasses.replace(cfg, scoring=ScoringConfig()) != dataclasses.replace(net.cfg, scoring=ScoringConfig()):
            raise ConfigError("calibrate can change model.scoring.* only (the weights fix the rest)")
        net.cfg = cfg
    cache = FrameCache(args.cache_dir or default_cache_dir())
    train_cfg = checkpoint.train_config(meta)
    if args.held_out_of:
        _, held, _ = load_segments(args.held_out_of, cfg, train_cfg or TrainConfig(), cache)
        if not held:
            raise DataError("--held-out-of: the footage is too short to hold out a tail of any video")
        scorer_meta = fit_scorer_on_segments(net, held, progress=not args.no_progress)[1]
    else:
        clips = [(s.name, np.asarray(cache.load(s, cfg.image_size, cfg.channels))) for p in args.data
                 for s in discover(p)]
        scorer_meta = fit_scorer(net, clips, progress=not args.no_progress)[1]
    meta.update(scorer_meta)
    for key in ("format", "model", "code_version", "saved_at", "train"):
        meta.pop(key, None)
    checkpoint.save(net, args.out, train_cfg, **meta)
    tails_only = bool(args.held_out_of) and not (train_cfg and train_cfg.holdout_videos)
    print(calibration_summary(scorer_meta["calibration"], tails_only))
    print(serve_hint(Path(args.out)))
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from export.onnx_export import export_onnx

    if args.precision == "int8":
        print(f"int8: activation ranges from frames of {args.int8_footage}", flush=True)
    sidecar = export_onnx(_model_path(args.model), args.out, precision=args.precision, max_batch=args.max_batch,
                          int8_footage=args.int8_footage)
    p = sidecar["parity_vs_pytorch"]
    print(f"wrote {args.out} ({sidecar['precision']}, opset {sidecar['opset']}) and {args.out}.json")
    print(f"parity vs PyTorch on the golden clip: score max rel err {p['score_max_rel_err']:.2e}, heatmap max err "
          f"{p['heatmap_max_err_of_max']:.2e} of its max (tolerance {p['tolerance']})")
    return 0


def cmd_export_tensorrt(args: argparse.Namespace) -> int:
    from export.bundle import ExportError, compare_outputs, infer_in_batches, load_bundle, write_beside
    from export.onnx_export import run_onnxruntime
    from export.tensorrt_build import BatchProfile, build_engine
    from export.tensorrt_runtime import TensorRTRunner

    profile = BatchProfile(args.min_batch, args.opt_batch, args.max_batch).validate()
    bundle = load_bundle(args.onnx)
    out = Path(args.out)

    def build_and_check(draft: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        sidecar = build_engine(args.onnx, draft, profile, workspace_mb=args.workspace_mb,
                               timing_cache=out.with_suffix(".timing.cache"))
        frames = bundle.golden_inputs()
        got = infer_in_batches(TensorRTRunner(draft), frames, profile.max_batch)
        parity = compare_outputs(got, run_onnxruntime(bundle.graph, frames), bundle.precision)
        if not parity["ok"]:
            raise ExportError(f"the TensorRT engine disagrees with ONNX Runtime beyond tolerance: {parity}")
        return sidecar, parity

    sidecar, parity = write_beside(out, build_and_check)  # a failed engine never replaces a good one
    print(f"wrote {args.out} (TensorRT {sidecar['engine']['tensorrt_version']}, profile {profile}); "
          f"parity vs ONNX Runtime: {parity}")
    return 0


def _server_settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The server's Settings, as `serve` and `healthcheck` both read them (``--config`` included)."""
    import os

    from service.settings import load_settings

    if args.config:
        os.environ["AEDMAE_CONFIG"] = args.config
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from export.bundle import load_bundle
    from service.app import create_app
    from service.backends import check_backend, resolve_backend

    settings = _server_settings(args, model=args.model, host=args.host, port=args.port, backend=args.backend,
                                device=args.device, workers=args.workers, max_batch_size=args.max_batch_size,
                                precision=args.precision)
    bundle = load_bundle(settings.model_path())  # a wrong model or backend fails here, in one line, not
    check_backend(resolve_backend(settings, bundle.graph), bundle, settings)  # after start-up
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                ssl_certfile=settings.tls_certfile, ssl_keyfile=settings.tls_keyfile,  # None, None: plain HTTP
                timeout_graceful_shutdown=10)  # SSE and preview clients are cut after 10 s
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """GET /healthz of the local server on the settings' port, over HTTPS when they set a TLS pair (its
    certificate is not checked: this asks the process whether it is alive, not who it is). Exit 1,
    with one line, when it does not answer 200."""
    import ssl
    import urllib.request

    settings = _server_settings(args)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    host = f"[{host}]" if ":" in host else host
    tls = settings.tls_certfile is not None
    url = f"{'https' if tls else 'http'}://{host}:{settings.port}/healthz"
    context = ssl._create_unverified_context() if tls else None  # liveness, not identity
    try:
        with urllib.request.urlopen(url, timeout=args.timeout, context=context) as r:
            status = r.status
    except OSError as e:  # refused, timed out, or an error status (urllib.error.HTTPError)
        print(f"aedmae healthcheck: {url}: {getattr(e, 'reason', None) or e}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


def _model_path(path: str | None) -> str:
    if path:
        return path
    from model.shipped import shipped_model

    return str(shipped_model())


def cmd_model_info(args: argparse.Namespace) -> int:
    from model import checkpoint
    from model.config import preset
    from model.info import describe, format_table
    from model.network import AEDMAE, count_parameters

    if args.model:
        net, _ = checkpoint.load(args.model)
    else:
        net = AEDMAE(preset(args.preset)[0])
    params = {
        "total": sum(p.numel() for p in net.parameters()),
        "encoder": count_parameters(net.encoder_modules()),
        "teacher": count_parameters(net.teacher_modules()),
        "student": count_parameters(net.student_modules()),
    }
    info = describe(net.cfg, params)
    if args.model:  # the same for every rebuild of these weights (the file's SHA-256 is not)
        info["weights_digest"] = checkpoint.weights_digest(args.model)
    print(json.dumps(info, indent=2) if args.json else format_table(info))
    return 0


def cmd_anomalies(args: argparse.Namespace) -> int:
    from model.dataset import TrainingClips, load_segments, write_anomaly_examples
    from model.frames import FrameCache, default_cache_dir
    from model.synthetic import AnomalySynthesizer

    model_cfg, train_cfg = _configure(args)
    cache = FrameCache(args.cache_dir or default_cache_dir())
    segments, _, _ = load_segments(args.data, model_cfg, train_cfg, cache)  # type: ignore[arg-type]
    synth = AnomalySynthesizer([s.frames for s in segments], train_cfg.synthetic)  # type: ignore[attr-defined]
    dataset = TrainingClips(segments, synth, 1.0, seed=args.seed)
    for path in write_anomaly_examples(dataset, args.out, args.count, args.seed):
        print(path)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "score": cmd_score, "calibrate": cmd_calibrate,
            "serve": cmd_serve, "export_onnx": cmd_export_onnx, "export_tensorrt": cmd_export_tensorrt,
            "model_info": cmd_model_info, "anomalies": cmd_anomalies, "healthcheck": cmd_healthcheck}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command not in ("serve", "healthcheck"):  # torch on the CPU would page-fault its activations in on
        reuse_freed_memory()  # every call; a server sets it only for a torch backend on the CPU (service/backends.py)
    try:
        writable_folders(args)
        return int(COMMANDS[args.func](args))
    except AedmaeError as e:
        print(f"aedmae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file it may not read or write, a full disk: the machine's answer, in one line
        log.debug("%s", args.command, exc_info=True)  # the traceback with --verbose
        print(f"aedmae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aedmae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
