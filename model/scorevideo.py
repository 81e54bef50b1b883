"""``aedmae score``: score a video file or a folder of frames without labels, the way a user first
tries the model on their own footage. Streams the input (it keeps the look-ahead's frames and one row
of numbers a frame) and writes per-frame scores (CSV + JSON), an annotated video (heatmap overlay,
recent score curve, alerts) and a timeline of the whole."""

from __future__ import annotations

import csv
import json
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from model import checkpoint
from model.calibration import ALERT, scene_check
from model.cuts import MAX_CHANGE, CutWindow
from model.errors import DataError
from model.evaluation import scorer_from_meta
from model.frames import VideoSource, declared_fps, discover, read_frames, to_model_frame
from model.metrics import SMOOTHING_SIGMA_S, InOrderSmoothing, OnlineSmoother
from model.overlay import caption, draw_regions, overlay_heatmap
from model.regions import ALERT_REGIONS, hot_regions
from model.scoring import score_frames

CURVE_HEIGHT = 60


def _curve(values: Sequence[float], width: int) -> np.ndarray:
    """A strip with the latest ``width`` calibrated scores (0..1), one pixel column a frame, the newest
    at the right once the strip is full (it scrolls, as a monitoring display does); the 0.5 threshold
    dashed, alerts in red. Drawing only what fits keeps each frame's cost fixed (about 1 ms at 640
    wide); the whole history squeezed into the strip grew with the video, to more than the model's own
    time an hour in. timeline.png shows the whole."""
    strip = np.full((CURVE_HEIGHT, width, 3), 24, np.uint8)
    y_thr = int(CURVE_HEIGHT * (1 - ALERT))
    for x in range(0, width, 6):
        cv2.line(strip, (x, y_thr), (x + 2, y_thr), (200, 160, 0), 1)
    recent = list(values)[-width:]
    ys = [int((1 - min(max(v, 0), 1)) * (CURVE_HEIGHT - 1)) for v in recent]
    for x, (y0, y1, v) in enumerate(zip(ys, ys[1:], recent[1:], strict=False)):
        cv2.line(strip, (x, y0), (x + 1, y1), (255, 60, 60) if v >= ALERT else (90, 200, 255), 1)
    return strip


class _AnnotatedWriter:
    """Writes annotated frames as their scores arrive, so only the look-ahead stays in memory."""

    def __init__(self, path: Path, size: tuple[int, int], vmax: float, fps: float) -> None:
        w, h = size
        self.width = w
        self.vmax = vmax
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h + CURVE_HEIGHT))
        self.values: deque[float] = deque(maxlen=w)  # what the curve strip shows

    def write(self, frame: np.ndarray, heatmap: np.ndarray, row: dict[str, Any]) -> None:
        self.values.append(row["smoothed"])
        rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB) if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        tile = overlay_heatmap(rgb, heatmap, self.vmax)
        if row["alert"]:
            tile = draw_regions(tile, hot_regions(heatmap, ALERT_REGIONS))
        tile = caption(tile,
                       f"#{row['frame']} score {row['smoothed']:.2f}{'  ALERT' if row['alert'] else ''}"
                       f"{'  SCENE CUT' if row['cut'] else ''}",
                       alert=row["alert"])
        canvas = np.concatenate([tile, _curve(self.values, self.width)], axis=0)
        self.writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self.writer.release()


def score_video(model_path: str | Path, source_path: str | Path, out_dir: str | Path,
                sigma_s: float = SMOOTHING_SIGMA_S, delay_s: float | None = None, batch_size: int = 16,
                progress: bool = True, max_change: float = MAX_CHANGE, every: int = 1) -> dict[str, Any]:
    """Score one unlabelled video; the alerts use a camera's smoothing, in seconds at the footage's frame
    rate (``delay_s`` of look-ahead, None = the whole window: see metrics.OnlineSmoother), so the smoothed
    scores are the ones a camera scoring every frame of this footage would give. A scene cut
    (model.cuts, ``max_change`` 0: off) ends the clip as a camera's does: the two sides are scored, and
    smoothed, as clips of their own. ``every`` 3 scores frames 0, 3, 6, ... only, three times faster:
    their inputs are the frames 3 before and after, which are kept too, so each score is the one the
    frame gets at full rate (as a shedding camera's, service.stream_parts.Shedding), away from the ends
    of a clip (the video's, a scene cut's), where the two clamp the window at different frames. (3 is
    the shipped model's context gap; ``every`` is 1 or the model's gap, ``model.scoring.context_gap``.)"""
    net, meta = checkpoint.load(model_path)
    gap = net.cfg.scoring.context_gap
    if every not in (1, gap):
        raise DataError(f"every={every}: 1 (every frame) or {gap} (one in {gap}: the model's context frames "
                        f"are {gap} apart)")
    scorer = scorer_from_meta(net, meta)
    sources = discover(source_path)
    if len(sources) != 1:
        raise DataError(f"{source_path}: expected one video (a file or a folder of frames), found {len(sources)}")
    source = sources[0]
    out = Path(out_dir)  # made at the first decoded frame: a source that cannot be read leaves nothing behind
    cfg = net.cfg
    window = CutWindow(max_change, spacing=every, gap=gap)
    originals: dict[int, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    writer: _AnnotatedWriter | None = None
    vmax = 2 * scorer.calibration.threshold if scorer.calibration else 1.0
    total, fps = _probe(source)
    rate = fps / every  # scored frames a second
    smoothing = InOrderSmoothing(OnlineSmoother.in_seconds(sigma_s, delay_s, rate))  # rows wait there for it
    bar = tqdm(total=total and -(-total // every), desc="score", unit="frame", disable=not progress)

    def run(ready: list[tuple[int, np.ndarray]]) -> None:
        for start in range(0, len(ready), batch_size):
            chunk = ready[start : start + batch_size]
            with torch.no_grad():
                s = score_frames(net, torch.from_numpy(np.stack([w for _, w in chunk])), scorer)
            for k, (kept, _) in enumerate(chunk):
                calibrated, t = float(s.calibrated[k]), kept * every  # the window counts kept frames
                row = {"frame": t, "time_s": round(t / fps, 3), "score": float(s.score[k]),
                       "teacher_error": float(s.teacher_error[k]), "discrepancy": float(s.discrepancy[k]),
                       "calibrated": calibrated, "cut": kept in window.cut_frames}
                rows.append(row)
                write(smoothing.push((row, s.heatmap[k].numpy()), 0.0 if np.isnan(calibrated) else calibrated))
            bar.update(len(chunk))

    def write(released: list[tuple[Any, float | None]]) -> None:
        for (row, heatmap), value in released:
            assert value is not None  # every frame is pushed with a score
            row.update(smoothed=value, alert=value >= ALERT)
            assert writer is not None
            writer.write(originals.pop(row["frame"]), heatmap, row)

    try:  # the bar ends before any error is printed
        pending: list[tuple[int, np.ndarray]] = []
        decoded = 0
        for t, frame in enumerate(read_frames(source)):
            decoded = t + 1
            if t % every:
                continue
            if writer is None:
                out.mkdir(parents=True, exist_ok=True)
                writer = _AnnotatedWriter(out / "annotated.mp4", (frame.shape[1], frame.shape[0]), vmax, rate)
            originals[t] = frame
            cuts = len(window.cut_frames)
            pending += window.push(to_model_frame(frame, cfg.image_size, cfg.channels))
            if len(window.cut_frames) > cuts:  # a scene cut before frame t: the clip so far ends, smoothing included
                run(pending)
                pending = []
                write(smoothing.flush())
                smoothing = InOrderSmoothing(OnlineSmoother.in_seconds(sigma_s, delay_s, rate))
            if len(pending) >= batch_size:
                run(pending)
                pending = []
        if writer is None:
            raise DataError(f"{source.path}: no frames decoded")
        run(pending + window.flush())
        write(smoothing.flush())
        writer.close()
    finally:
        bar.close()
    _write_tables(out, rows)
    from model.plots import plot_timelines

    calibrated = np.array([r["calibrated"] for r in rows])
    smoothed = np.array([r["smoothed"] for r in rows])
    cut_frames = [k * every for k in window.cut_frames]  # source frames
    plot_timelines({source.name: {"score": calibrated, "smoothed": smoothed, "cuts": np.array(cut_frames),
                                  "frames": np.array([r["frame"] for r in rows])}}, out / "timeline.png", ALERT)
    short = total is not None and source.is_file and decoded < 0.98 * total
    return {"frames": len(rows), "frames_decoded": decoded, "every": every, "frames_declared": total, "fps": fps,
            "decode_warning": f"the file declares {total} frames but only {decoded} decoded: it may be truncated "
                              "or corrupt after that point" if short else None,
            "alert_frames": int(sum(r["alert"] for r in rows)),
            "source": str(source.path), "out": str(out), "scene": scene_check(calibrated),
            "scene_cuts": cut_frames}


def _probe(source: VideoSource) -> tuple[int | None, float]:
    """A source's frame count (None when the container does not say) and frame rate: the video's own,
    so that the annotated video plays at the footage's speed and ``time_s`` points into it; 25 for a
    folder of frames or a file that does not say."""
    if not source.is_file:
        return len(source.frames), 25.0
    cap = cv2.VideoCapture(str(source.path))
    try:
        count, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), declared_fps(cap)
    finally:
        cap.release()
    return count or None, fps or 25.0


def _write_tables(out: Path, rows: list[dict[str, Any]]) -> None:
    (out / "scores.json").write_text(json.dumps(rows) + "\n")
    with (out / "scores.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
