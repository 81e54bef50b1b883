"""Scoring clips, fitting the scorer's calibration, and evaluating on labelled test sets."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from model.calibration import ALERT, fit_calibration, numbers
from model.config import ScoringConfig
from model.datasets import TestVideo, read_test_set
from model.errors import ConfigError, DataError
from model.frames import FrameCache
from model.metrics import OnlineSmoother, detection_at, gaussian_smooth, reference_postprocess, summarize
from model.network import AEDMAE
from model.scoring import ONE_VIEW, FrameScores, Scorer, View, pool_token_means, scoring_views, token_errors
from model.window import clip_windows

if TYPE_CHECKING:
    from model.dataset import Segment

log = logging.getLogger(__name__)
TOKEN_STAT_FLOOR = 0.05  # token means are floored at this fraction of their grid-wide mean


@dataclass
class ClipErrors:
    """Raw per-token errors of every frame of one clip on each scoring view: (N, S, L) float32 each."""

    teacher_error: torch.Tensor
    discrepancy: torch.Tensor


@torch.no_grad()
def clip_errors(net: AEDMAE, frames: np.ndarray, batch_size: int = 16, bar: Any = None,
                keep: torch.Tensor | None = None, views: list[View] | None = None) -> ClipErrors:
    """Per-token errors for every frame t of a clip (N, H, W, C) uint8, edges clamped, on ``views``
    (default the model's, ``model.scoring.scoring_views``)."""
    device = next(net.parameters()).device
    te, dis = [], []
    for start in range(0, len(frames), batch_size):
        centres = np.arange(start, min(start + batch_size, len(frames)))
        batch = torch.from_numpy(clip_windows(frames, centres, net.cfg.scoring.context_gap)).to(device)
        e, d = token_errors(net, batch, keep, views)
        te.append(e.float().cpu())
        dis.append(d.float().cpu())
        if bar is not None:
            bar.update(len(centres))
    return ClipErrors(torch.cat(te), torch.cat(dis))


def apply_scorer(scorer: Scorer, errors: ClipErrors) -> FrameScores:
    return scorer(errors.teacher_error, errors.discrepancy)


def fit_scorer(net: AEDMAE, normal_clips: Iterable[tuple[str, np.ndarray]], cfg: ScoringConfig | None = None,
               progress: bool = False, keep: torch.Tensor | None = None) -> tuple[Scorer, dict[str, Any]]:
    """Fit token statistics and calibration on normal clips [(video name, frames)] (``keep``: the
    inference masks, default the model's; the masking ablation fits each design its own).

    Returns the scorer and the metadata to store in the checkpoint (``calibration``, ``token_stats``).
    """
    cfg = cfg or net.cfg.scoring
    clips = list(normal_clips)
    if not clips:
        raise DataError("calibration needs normal frames (none were held out)")
    from tqdm import tqdm

    total = sum(len(f) for _, f in clips)
    bar = tqdm(total=total, desc="calibrate", unit="frame", disable=not progress)
    errors = [clip_errors(net, f, bar=bar, keep=keep, views=scoring_views(net.cfg, cfg)) for _, f in clips]
    bar.close()
    te = torch.cat([e.teacher_error for e in errors])
    dis = torch.cat([e.discrepancy for e in errors])
    grid = net.cfg.grid
    mean_te, mean_dis = (pool_token_means(m.mean(0), grid, cfg.token_stat_pool) for m in (te, dis))  # (S, L)
    mean_te = mean_te.clamp(min=TOKEN_STAT_FLOOR * float(mean_te.mean()) + 1e-12)
    mean_dis = mean_dis.clamp(min=TOKEN_STAT_FLOOR * float(mean_dis.mean()) + 1e-12)
    uncalibrated = Scorer(grid, cfg, None, mean_te, mean_dis)
    scores = uncalibrated(te, dis).score.numpy()
    if len(clips) > 1:  # the false-alarm rate is cross-validated over videos: fit on half, count on the rest
        groups, folds = np.concatenate([np.full(len(f), i) for i, (_, f) in enumerate(clips)]), "videos"
    else:  # one video (one camera's recording): over its quarters, 1st + 3rd against 2nd + 4th
        groups, folds = np.arange(total) * 4 // total, "quarters of one video"
    calibration = fit_calibration(scores, cfg.calibration_quantile, groups)
    meta = {
        "calibration": calibration.to_dict() | {"source": [name for name, _ in clips], "cross_validated_over": folds},
        # flat, grid-major (S * L values): the one-grid layout is unchanged
        "token_stats": {"teacher_error": mean_te.flatten().tolist(), "discrepancy": mean_dis.flatten().tolist()},
    }
    return Scorer(grid, cfg, calibration, mean_te, mean_dis), meta


def fit_scorer_on_segments(net: AEDMAE, segments: Sequence[Segment], cfg: ScoringConfig | None = None,
                           progress: bool = False, held_out: bool = True,
                           keep: torch.Tensor | None = None) -> tuple[Scorer, dict[str, Any]]:
    """fit_scorer on training-footage segments, as training fits it: on the held-out tails of the
    training videos (``held_out``: the metadata says whether they were held out of training, which
    decides whether the false-alarm rate is honest)."""
    scorer, meta = fit_scorer(net, [(s.name, np.asarray(s.frames)) for s in segments], cfg, progress, keep)
    meta["calibration"]["held_out"] = held_out
    return scorer, meta


def scorer_from_meta(net: AEDMAE, meta: dict[str, Any], cfg: ScoringConfig | None = None) -> Scorer:
    """The checkpoint's scorer; ``cfg`` overrides its scoring config (ablations), keeping its stats
    (the calibration is dropped then: it belongs to the stored config)."""
    from model.calibration import Calibration

    stats = meta.get("token_stats")
    cal = meta.get("calibration")
    if stats and not (isinstance(stats, dict) and numbers(stats.get("teacher_error"))
                      and numbers(stats.get("discrepancy"))):
        raise ConfigError("the checkpoint's token_stats must hold lists of numbers teacher_error and discrepancy: "
                          "refit them (aedmae calibrate)")
    calibration = Calibration.from_dict(cal) if cal else None
    if cfg is not None and cfg != net.cfg.scoring:
        calibration = None
    te = torch.tensor(stats["teacher_error"]) if stats else None
    dis = torch.tensor(stats["discrepancy"]) if stats else None
    if (cfg or net.cfg.scoring).token_normalization and stats is None:
        raise DataError("this checkpoint has no token statistics; it cannot use token_normalization")
    return Scorer(net.cfg.grid, cfg or net.cfg.scoring, calibration, te, dis)


def score_test_set(net: AEDMAE, videos: list[TestVideo], cache: FrameCache, progress: bool = True,
                   keep: torch.Tensor | None = None,
                   views: list[View] | None = None) -> dict[str, tuple[np.ndarray, ClipErrors, np.ndarray]]:
    """{video: (labels, per-token errors, frames)} for every test video (on ``views``, default the
    model's)."""
    cfg = net.cfg
    decoded = []
    for v in videos:
        frames = cache.load(v.source, cfg.image_size, cfg.channels)
        if len(frames) != len(v.labels):
            raise DataError(f"{v.source.path}: {len(frames)} frames but {len(v.labels)} labels")
        decoded.append((v, frames))
    from tqdm import tqdm

    bar = tqdm(total=sum(len(f) for _, f in decoded), desc="score", unit="frame", disable=not progress)
    out = {}
    for v, frames in decoded:
        bar.set_postfix(video=v.name)
        out[v.name] = (v.labels, clip_errors(net, frames, bar=bar, keep=keep, views=views), frames)
    bar.close()
    return out


def metrics_for(results: dict[str, tuple[np.ndarray, FrameScores]], sigma: float,
                threshold: float | None, delay: int | None = None) -> dict[str, Any]:
    """AUCs raw / offline-smoothed / online-smoothed (the service's smoother, waiting ``delay`` frames;
    None: the whole window) / causal (no wait), and detection at the calibrated threshold (online)."""
    def pick(transform: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {k: (y, transform(s.score.numpy().astype(np.float64))) for k, (y, s) in results.items()}

    raw = pick(lambda s: s)
    offline = pick(lambda s: gaussian_smooth(s, sigma))
    online = pick(lambda s: OnlineSmoother(sigma, delay).smooth(s))
    causal = pick(lambda s: OnlineSmoother(sigma, 0).smooth(s))
    report: dict[str, Any] = {"raw": summarize(raw), "smoothed": summarize(offline), "online": summarize(online),
                              "causal": summarize(causal), "online_delay_frames": OnlineSmoother(sigma, delay).delay}
    parts = {"teacher_error_only": "teacher_error", "discrepancy_only": "discrepancy"}
    for key, field in parts.items():
        report[key] = summarize({k: (y, getattr(s, field).numpy()) for k, (y, s) in results.items()})["micro_auc"]
    report["reference_protocol"] = reference_protocol(results)
    if threshold is not None:
        labels = np.concatenate([y for y, _ in online.values()])
        calibrated = np.concatenate([s.calibrated.numpy() for _, s in results.values()])
        smoothed_cal = np.concatenate([OnlineSmoother(sigma, delay).smooth(s.calibrated.numpy())
                                       for _, s in results.values()])
        report["detection_raw"] = vars(detection_at(labels, calibrated, ALERT))
        report["detection_online"] = vars(detection_at(labels, smoothed_cal, ALERT))
    return report


def reference_protocol(results: dict[str, tuple[np.ndarray, FrameScores]]) -> dict[str, float]:
    """Micro AUC through the reference code's own post-processing (metrics.reference_postprocess), so
    its reported figures can be compared on the same metric: our score, the teacher error alone (what
    that code scores outside Avenue) and a constant score (what the post-processing alone gives)."""
    def micro(pick: Any) -> float:
        auc = summarize({k: (y, reference_postprocess(pick(s))) for k, (y, s) in results.items()})["micro_auc"]
        assert isinstance(auc, float)
        return auc

    return {"score": micro(lambda s: s.score.numpy()), "teacher_error": micro(lambda s: s.teacher_error.numpy()),
            "constant": micro(lambda s: np.ones(len(s.score)))}


def ablation_scorers(base: Scorer) -> dict[str, Scorer]:
    """Scoring variants evaluated from the same network outputs (uncalibrated)."""
    cfg = base.cfg
    variants = {
        "paper (mean, raw)": replace(cfg, reduction="mean", token_normalization=False),
        "mean, token-normalised": replace(cfg, reduction="mean", token_normalization=True),
        "top-k, raw": replace(cfg, reduction="topk", token_normalization=False),
        "top-k, token-normalised": replace(cfg, reduction="topk", token_normalization=True),
        "teacher error only (top-k, normalised)": replace(cfg, reduction="topk", token_normalization=True,
                                                          discrepancy_weight=0.0),
    }
    return {k: Scorer(base.grid, v, None, *base.token_means())
            for k, v in variants.items()}


@torch.no_grad()
def synthetic_pairs(net: AEDMAE, segments: list[Any], synthesizer: Any, seed: int = 0, max_frames: int = 256,
                    views: list[View] | None = None, observe: Callable[[dict[str, Any]], None] | None = None,
                    keep: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Labels (2N,) and raw per-token errors (2N, S, L) of N held-out normal frames, then the same frames
    with synthetic anomalies pasted: the label-free validation set recipe and scoring choices use.
    ``views``: the scoring views (default the model's). ``observe`` is called with each pasted sample
    (frames, target, mask) right after it is drawn, in the order of the pasted half, while the
    synthesizer still holds that draw's state (e.g. ``last_motion``). ``keep``: the inference masks
    (default the model's)."""
    from model.dataset import TrainingClips

    gap = net.cfg.scoring.context_gap  # the pastes move over the window the model is scored on
    clips = TrainingClips(segments, synthesizer, fraction=1.0, seed=seed, gap=gap)
    idx = np.random.default_rng(seed).choice(len(clips), size=min(max_frames, len(clips)), replace=False)
    device = next(net.parameters()).device
    errors: dict[str, list[torch.Tensor]] = {"clean_e": [], "clean_d": [], "pasted_e": [], "pasted_d": []}
    for start in range(0, len(idx), 16):
        chunk = [int(i) for i in idx[start : start + 16]]
        samples = []
        for i in chunk:
            samples.append(clips[i])
            if observe is not None:
                observe(samples[-1])
        pasted = torch.stack([sample["frames"] for sample in samples])
        clean = torch.stack([torch.from_numpy(clip_windows(clips.segments[clips.index[i][0]].frames,
                                                           np.array([clips.index[i][1]]), gap)[0]) for i in chunk])
        e, d = (x.cpu() for x in token_errors(net, torch.cat([clean, pasted]).to(device), keep, views))
        for key, x in (("clean_e", e[: len(chunk)]), ("clean_d", d[: len(chunk)]),
                       ("pasted_e", e[len(chunk) :]), ("pasted_d", d[len(chunk) :])):
            errors[key].append(x)
    # all the normal frames, then the same frames pasted in the same order: sample i and i + N are a pair
    labels = np.r_[np.zeros(len(idx)), np.ones(len(idx))]
    return (labels, torch.cat(errors["clean_e"] + errors["pasted_e"]),
            torch.cat(errors["clean_d"] + errors["pasted_d"]))


def one_grid(net: AEDMAE, te: torch.Tensor, dis: torch.Tensor) -> FrameScores:
    """The learning curve's frame scores of raw per-token errors from ``synthetic_pairs(views=ONE_VIEW)``:
    one grid, errors not token-normalised (nothing fitted, so comparable across scoring configs and runs)."""
    return Scorer(net.cfg.grid, replace(net.cfg.scoring.one_view(), token_normalization=False))(te, dis)


def synthetic_validation(net: AEDMAE, segments: list[Any], synthesizer: Any, scorers: dict[str, Scorer] | None = None,
                         seed: int = 0, max_frames: int = 256, keep: torch.Tensor | None = None) -> dict[str, float]:
    """AUC of telling held-out normal frames from the same frames with synthetic anomalies pasted.
    Needs no test labels: recipe and scoring choices are made on this. Without ``scorers`` it
    reports the teacher error, the discrepancy and the paper's score on one grid (the training
    learning curve: cheap, and comparable across scoring configs)."""
    from model.metrics import roc_auc

    y, te, dis = synthetic_pairs(net, segments, synthesizer, seed, max_frames,
                                 views=ONE_VIEW if scorers is None else None, keep=keep)
    if scorers is None:
        s = one_grid(net, te, dis)
        return {f"synthetic_auc_{k}": roc_auc(y, getattr(s, k).numpy())
                for k in ("teacher_error", "discrepancy", "score")}
    return {name: roc_auc(y, scorer(te, dis).score.numpy()) for name, scorer in scorers.items()}


def learning_curve_hook(trainer: Any, eval_data: str | None, eval_every: int) -> Any:
    """Epoch hook for ``aedmae train``: every ``eval_every`` epochs (and the last), the synthetic-anomaly
    validation AUC (what recipe choices use) and, with ``eval_data``, the test-set AUC for the learning
    curve (recorded only, never used to choose)."""
    videos = read_test_set(eval_data)[1] if eval_data else None

    def hook(stage: str, epoch: int, net: Any, held: list) -> dict[str, float]:
        out: dict[str, float] = {}
        epochs = trainer.cfg.epochs_teacher if stage == "teacher" else trainer.cfg.epochs_student
        if epoch % eval_every and epoch != epochs:
            return out
        synth = trainer.dataset.synthesizer
        if held and synth is not None:
            out.update(synthetic_validation(net, held, synth))
        if videos:
            # on one view, like the synthetic validation: the curve follows training, and scoring
            # views are a post-training choice that would multiply the cost of every point
            raw = score_test_set(net, videos, trainer.cache, progress=False, views=ONE_VIEW)
            scorers = {"paper": Scorer(net.cfg.grid)}  # mean of raw errors
            if held:
                scorers["configured"] = fit_scorer_on_segments(net, held, net.cfg.scoring.one_view())[0]
            for name, scorer in scorers.items():
                m = metrics_for({k: (y, apply_scorer(scorer, e)) for k, (y, e, _) in raw.items()}, 3.0, None)
                out.update({f"test_micro_auc_{name}": m["raw"]["micro_auc"],
                            f"test_micro_auc_{name}_smoothed": m["smoothed"]["micro_auc"]})
        if out:
            log.info("%s epoch %d: %s", stage, epoch, ", ".join(f"{k}={v:.4f}" for k, v in out.items()))
        return out

    return hook
