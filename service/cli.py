"""The ``aedmae`` command: a thin dispatcher. Every subcommand imports what it needs lazily, so
``aedmae serve`` never imports training code (or torch, for an ONNX model)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from model.errors import AedmaeError

log = logging.getLogger("aedmae")


def _configure(args: argparse.Namespace) -> tuple[object, object]:
    from model.config import apply_overrides, preset

    model_cfg, train_cfg = preset(args.preset)
    return apply_overrides(model_cfg, train_cfg, args.set or [])


def cmd_train(args: argparse.Namespace) -> int:
    from model.config import to_dict
    from model.training import Trainer

    model_cfg, train_cfg = _configure(args)
    out = Path(args.out)
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
        log.info("data: %s", json.dumps(trainer.data_summary))
        summary = trainer.run(resume=args.resume)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
    for name, stage in summary["stages"].items():
        print(f"{name:8s} {stage['epochs']} epochs, {stage['steps']} steps, {stage['frames_per_second']:.1f} "
              f"frames/s, final loss {stage['losses'][-1]:.5f}")
    print(f"checkpoint: {out / 'model.safetensors'}")
    return 0


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


def _add_config_args(p: argparse.ArgumentParser, default_preset: str) -> None:
    p.add_argument("--preset", default=default_preset, help="configuration preset (reference, quick, tiny)")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set model.patch_size=8 --set train.epochs_teacher=3")
    p.add_argument("--cache-dir", help="decoded-frame cache (default ~/.cache/aedmae/frames or $AEDMAE_CACHE_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aedmae", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train encoder + teacher, then distil the student")
    p.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="frame folders (<root>/<video>/<frame>) or video files; repeatable")
    p.add_argument("--out", required=True, help="output folder for the checkpoint, log and train state")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    _add_config_args(p, "quick")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("model-info", help="parameters and FLOPs per frame")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help="a checkpoint folder or file")
    g.add_argument("--preset", default="reference", help="a configuration preset (default: reference)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_model_info)

    p = sub.add_parser("anomalies", help="write example training samples with synthetic anomalies as PNGs")
    p.add_argument("--data", action="append", required=True, metavar="PATH")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    _add_config_args(p, "quick")
    p.set_defaults(func=cmd_anomalies)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except AedmaeError as e:
        print(f"aedmae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aedmae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
