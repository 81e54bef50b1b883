"""Two-stage training. Stage 1 trains the encoder and the teacher decoder with the motion-weighted
loss; stage 2 freezes them (BatchNorm statistics included) and distils the student decoder.

Seeded, resumable (``train_state.pt`` after every epoch), CPU or CUDA; bf16 autocast by default on CUDA
and on CPUs with native bf16 (``train.precision``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model import checkpoint, durable
from model.averaging import WeightAverage
from model.config import ModelConfig, TrainConfig, from_dict, to_dict
from model.cpu import native_cpu_bf16
from model.dataset import Segment, TrainingClips, load_segments
from model.errors import CheckpointError, ConfigError
from model.frames import FrameCache, default_cache_dir
from model.loss import distillation_loss, motion_weights, teacher_loss
from model.masking import keep_to_mask, train_keep
from model.network import AEDMAE, init_weights, normalize, reconstruction_target
from model.synthetic import AnomalySynthesizer

log = logging.getLogger(__name__)
STATE = "train_state.pt"
EpochHook = Callable[[str, int, AEDMAE, list[Segment]], dict[str, float] | None]


@dataclass
class StageReport:
    name: str
    epochs: int = 0
    steps: int = 0
    frames: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # mean loss of each epoch

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name}: CUDA is not available on this machine (use cpu or auto)")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the training steps for ``train.precision`` (None: plain float32).
    auto: bf16 on CUDA and on CPUs with native bf16, float32 elsewhere."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.precision={precision!r}: choose auto, fp32 or bf16")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" or native_cpu_bf16() else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def _settings(model: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """Config dicts keyed as on the command line (``model.patch_size``, ``train.seed``)."""
    return {f"{section}.{k}": v for section, cfg in (("model", model), ("train", train)) for k, v in cfg.items()}


def _changes(saved: dict[str, Any], now: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """``key (saved X, now Y), ...`` for every setting that differs (except ``skip``); '' when none."""
    keys = sorted(k for k in saved.keys() | now.keys() if k not in skip and saved.get(k) != now.get(k))
    return ", ".join(f"{k} (saved {saved.get(k)!r}, now {now.get(k)!r})" for k in keys)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _schedule(total_steps: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Trainer:
    """Runs both stages into ``out_dir``: checkpoint, ``train.log`` and ``train_state.pt``."""

    def __init__(
        self,
        data: list[str],
        out_dir: str | Path,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        cache_dir: str | Path | None = None,
        epoch_hook: EpochHook | None = None,
        progress: bool = True,
    ) -> None:
        self.model_cfg = model_cfg.validate()
        self.cfg = train_cfg.validate()  # here, not only in the synthesizer: a negative fraction never builds one
        self.out = Path(out_dir)
        self.device = resolve_device(train_cfg.device)
        self.autocast_dtype = autocast_dtype(train_cfg.precision, self.device)
        log.info("training steps in %s on %s (train.precision=%s)", self.precision, self.device, train_cfg.precision)
        self.epoch_hook = epoch_hook
        self.progress = progress
        self.cache = FrameCache(cache_dir or default_cache_dir())
        self.train_segments, self.held_segments, self.data_summary = load_segments(
            data, self.model_cfg, train_cfg, self.cache
        )
        synth = None
        if train_cfg.synthetic.fraction > 0:
            synth = AnomalySynthesizer([s.frames for s in self.train_segments], train_cfg.synthetic)
        self.dataset = TrainingClips(
            self.train_segments, synth, train_cfg.synthetic.fraction, train_cfg.frame_step, train_cfg.seed,
            train_cfg.grid_shift, gap=self.model_cfg.scoring.context_gap,  # trained on the window it is scored on
        )
        if len(self.dataset) == 0:
            raise ConfigError("no training samples")
        self.history: list[dict[str, Any]] = []

    # -- plumbing -------------------------------------------------------------------------------
    def _loader(self, epoch: int) -> DataLoader[dict[str, torch.Tensor]]:
        self.dataset.set_epoch(epoch)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        return DataLoader(
            self.dataset, batch_size=self.cfg.batch_size, shuffle=True, generator=gen,
            num_workers=self.cfg.num_workers, drop_last=len(self.dataset) >= 2 * self.cfg.batch_size,
            persistent_workers=False, pin_memory=self.device.type == "cuda",
        )

    def _steps_per_epoch(self) -> int:
        n = len(self.dataset) // self.cfg.batch_size or 1
        return min(n, self.cfg.max_steps_per_epoch) if self.cfg.max_steps_per_epoch else n

    def _save_state(self, net: AEDMAE, stage: str, epoch: int, opt: torch.optim.Optimizer,
                    sched: torch.optim.lr_scheduler.LRScheduler, reports: dict[str, StageReport],
                    average: WeightAverage | None) -> None:
        state = {
            "stage": stage, "epoch": epoch, "model": net.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
            "average": average.state_dict() if average is not None else None,
            "reports": {k: vars(v) for k, v in reports.items()}, "history": self.history,
            "model_config": to_dict(self.model_cfg), "train_config": to_dict(self.cfg),
        }
        tmp = self.out / (STATE + ".tmp")
        torch.save(state, tmp)
        durable.replace((tmp, self.out / STATE))

    def _load_state(self) -> dict[str, Any] | None:
        path = self.out / STATE
        if not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=False)
        saved_train = dict(state["train_config"])
        if "precision" not in saved_train:  # written before train.precision existed: its steps ran in fp32
            saved_train["precision"] = self.cfg.precision if self.precision == "fp32" else "fp32"
        # fields added since the state was written take their defaults (a later field's default is the
        # behaviour the run had before it existed, e.g. train.synthetic.native_size=0)
        saved_train = to_dict(from_dict(TrainConfig, saved_train))
        saved = _settings(to_dict(from_dict(ModelConfig, state["model_config"])), saved_train)
        now = _settings(to_dict(self.model_cfg), to_dict(self.cfg))
        diff = _changes(saved, now)
        if diff:
            raise CheckpointError(f"{path}: saved with a different configuration: {diff}; cannot resume "
                                  "(set the saved values, or use a new --out)")
        return state

    # -- the stages -----------------------------------------------------------------------------
    def _step_teacher(self, net: AEDMAE, batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        frames, mask = batch["frames"], batch["mask"]
        keep = train_keep(self.model_cfg, frames.shape[0], gen).to(self.device)
        teacher, _ = net(normalize(frames), keep, with_student=False)
        target = reconstruction_target(batch["target"], mask, self.model_cfg.patch_size)
        removed = keep_to_mask(keep, target.shape[1])
        weights = None
        if self.cfg.motion_weighting:
            weights = motion_weights(batch["gradient"], mask, self.model_cfg.patch_size)
        return teacher_loss(teacher.float(), target, weights, removed)

    def _step_student(self, net: AEDMAE, batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        frames = batch["frames"]
        keep = train_keep(self.model_cfg, frames.shape[0], gen).to(self.device)
        teacher, student = net(normalize(frames), keep, with_student=True)
        assert student is not None
        return distillation_loss(student.float(), teacher.float(), keep_to_mask(keep, teacher.shape[1]))

    @property
    def precision(self) -> str:
        """The precision the steps run in (what ``train.precision`` resolved to here)."""
        return "fp32" if self.autocast_dtype is None else "bf16"

    def train_step(self, net: AEDMAE, batch: dict[str, torch.Tensor], gen: torch.Generator,
                   opt: torch.optim.Optimizer, teacher_stage: bool, where: str = "") -> float:
        """One optimiser step of a stage on a batch, under the configured autocast; returns the loss.
        The net must be prepared for the stage (:meth:`prepare_stage`)."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        step_fn = self._step_teacher if teacher_stage else self._step_student
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            loss = step_fn(net, batch, gen)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{where}: loss is {loss.item()}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def prepare_stage(self, net: AEDMAE, teacher_stage: bool) -> None:
        """What each stage trains: encoder + teacher (student frozen), or the student alone (backbone
        frozen, its BatchNorm statistics and dropout as trained)."""
        if teacher_stage:
            for m in net.student_modules():
                m.requires_grad_(False)
        else:
            for m in net.encoder_modules() + net.teacher_modules():
                m.requires_grad_(False)
            for m in net.student_modules():
                m.requires_grad_(True)
        self._set_train_mode(net, teacher_stage)

    def _run_stage(self, net: AEDMAE, name: str, state: dict[str, Any] | None,
                   reports: dict[str, StageReport]) -> None:
        teacher_stage = name == "teacher"
        epochs = self.cfg.epochs_teacher if teacher_stage else self.cfg.epochs_student
        pasted = teacher_stage or self.cfg.student_synthetic
        self.dataset.fraction = self.cfg.synthetic.fraction if pasted else 0.0  # no synthesizer: fraction is 0
        params = [p for p in net.parameters() if p.requires_grad]
        lr = self.cfg.lr if teacher_stage else self.cfg.lr_student
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=self.cfg.weight_decay, betas=self.cfg.betas)
        steps = self._steps_per_epoch()
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(steps * epochs, self.cfg.warmup_steps))
        report = reports.setdefault(name, StageReport(name))
        average = WeightAverage(net, self.cfg.ema_decay) if self.cfg.ema_decay else None
        start_epoch = 0
        if state is not None and state["stage"] == name:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if average is not None:
                average.load_state_dict(state["average"])
            start_epoch = state["epoch"] + 1
        for epoch in range(start_epoch, epochs):
            gen = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch + (0 if teacher_stage else 10_000))
            bar = tqdm(total=steps, desc=f"{name} {epoch + 1}/{epochs}", unit="step", disable=not self.progress,
                       dynamic_ncols=True, leave=True)
            t0, losses, seen = time.perf_counter(), [], 0
            for i, batch in enumerate(self._loader(epoch + (0 if teacher_stage else 1000))):
                if i >= steps:
                    break
                where = f"{name} epoch {epoch + 1} step {i}"
                losses.append(self.train_step(net, batch, gen, opt, teacher_stage, where))
                sched.step()
                if average is not None:
                    average.update()
                seen += batch["frames"].shape[0]
                fps = seen / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", fps=f"{fps:.1f}")
                bar.update()
            bar.close()
            seconds = time.perf_counter() - t0
            report.epochs, report.steps = epoch + 1, report.steps + len(losses)
            report.frames += seen
            report.seconds += seconds
            report.losses.append(float(np.mean(losses)))
            entry: dict[str, Any] = {"stage": name, "epoch": epoch + 1, "loss": report.losses[-1],
                                     "frames_per_second": seen / seconds, "minutes": self._minutes(reports)}
            if self.epoch_hook is not None:  # sees the weights the stage would end with now
                net.eval()
                with average.applied() if average is not None else nullcontext():
                    entry.update(self.epoch_hook(name, epoch + 1, net, self.held_segments) or {})
                self._set_train_mode(net, teacher_stage)
            self.history.append(entry)
            left = report.seconds / report.epochs * (epochs - report.epochs) / 60
            log.info("%s epoch %d/%d: loss %.5f, %.1f frames/s; %.1f min of training so far, about %.1f min "
                     "left in this stage", name, epoch + 1, epochs, entry["loss"], entry["frames_per_second"],
                     entry["minutes"], left)
            self._save_state(net, name, epoch, opt, sched, reports, average)
        if average is not None:
            average.copy_to_net()
            log.info("%s stage: the weights averaged over its steps (decay %g) replace the trained ones",
                     name, self.cfg.ema_decay)

    @staticmethod
    def _minutes(reports: dict[str, StageReport]) -> float:
        return sum(r.seconds for r in reports.values()) / 60

    @staticmethod
    def _set_train_mode(net: AEDMAE, teacher_stage: bool) -> None:
        net.train()
        if not teacher_stage:  # frozen backbone: BatchNorm statistics and dropout stay as trained
            for m in net.encoder_modules() + net.teacher_modules():
                if isinstance(m, torch.nn.Module):
                    m.eval()

    def _take_teacher(self, net: AEDMAE, source: str | Path, reports: dict[str, StageReport]) -> None:
        """Encoder + teacher weights from a trained checkpoint of the same architecture, and that
        stage's report (its cost stays in the accounting)."""
        trained, meta = checkpoint.load(source)
        # scoring and inference masking are applied after training: a teacher may differ in them
        diff = _changes(_settings(to_dict(trained.cfg), {}), _settings(to_dict(self.model_cfg), {}),
                        skip=("model.scoring", "model.inference_masking"))
        if diff:
            raise ConfigError(f"--teacher {source}: its model differs in {diff}")
        if trained.cfg.scoring.context_gap != self.model_cfg.scoring.context_gap:  # the one scoring field it learnt
            raise ConfigError(f"--teacher {source}: it reads frames {trained.cfg.scoring.context_gap} apart "
                              f"(model.scoring.context_gap), this run {self.model_cfg.scoring.context_gap}")
        weights = {k: v for k, v in trained.state_dict().items() if not k.startswith("student_")}
        missing = net.load_state_dict(weights, strict=False).missing_keys
        assert all(k.startswith("student_") for k in missing), missing
        stage = (meta.get("training") or {}).get("stages", {}).get("teacher")
        if stage:
            reports["teacher"] = StageReport("teacher", stage["epochs"], stage["steps"], stage["frames"],
                                             stage["seconds"], list(stage["losses"]))
        self.history = [h for h in (meta.get("training") or {}).get("history", []) if h.get("stage") == "teacher"]
        log.info("teacher stage taken from %s; training the student only", source)

    @staticmethod
    def _reset_student(net: AEDMAE) -> None:
        """Fresh student weights from the seeded generator: the student stage then depends only on
        the teacher, the seed and the config, whether the teacher was trained now or taken."""
        for m in net.student_modules():
            assert isinstance(m, torch.nn.Module)
            for sub in m.modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset):
                    reset()
            m.apply(init_weights)

    def run(self, resume: bool = False, teacher: str | Path | None = None) -> dict[str, Any]:
        """Train both stages (only the student's with ``teacher``, a trained checkpoint whose encoder and
        teacher are kept); returns the report written into the checkpoint."""
        self.out.mkdir(parents=True, exist_ok=True)
        seed_everything(self.cfg.seed)
        net = AEDMAE(self.model_cfg).to(self.device)
        state = self._load_state() if resume else None
        reports: dict[str, StageReport] = {}
        if state is None and teacher is not None:
            self._take_teacher(net, teacher, reports)
        if state is not None:
            net.load_state_dict(state["model"])
            torch.set_rng_state(state["torch_rng"])
            reports = {k: StageReport(**v) for k, v in state["reports"].items()}
            self.history = state["history"]
            log.info("resuming after %s epoch %d", state["stage"], state["epoch"] + 1)
        train_teacher = state["stage"] == "teacher" if state is not None else teacher is None
        if train_teacher:
            self.prepare_stage(net, teacher_stage=True)
            self._run_stage(net, "teacher", state, reports)
            state = None
        if state is None:
            seed_everything(self.cfg.seed + 1)
            self._reset_student(net)
        self.prepare_stage(net, teacher_stage=False)
        self._run_stage(net, "student", state, reports)
        net.eval()
        scorer_meta = self.calibrate(net)
        summary = {
            "stages": {k: {"epochs": r.epochs, "steps": r.steps, "frames": r.frames, "seconds": round(r.seconds, 1),
                           "frames_per_second": round(r.frames_per_second, 2), "losses": r.losses}
                       for k, r in reports.items()},
            "history": self.history,
            "precision": self.precision,
        }
        checkpoint.save(net.cpu(), self.out, self.cfg, data=self.data_summary, training=summary, **scorer_meta)
        return summary

    def calibrate(self, net: AEDMAE) -> dict[str, Any]:
        """Token statistics and calibration from the held-out tails (or, without any, the training
        frames, which makes the false-alarm rate optimistic: the metadata says which)."""
        from model.evaluation import fit_scorer_on_segments

        held = self.held_segments or self.train_segments
        return fit_scorer_on_segments(net, held, progress=self.progress, held_out=bool(self.held_segments))[1]
