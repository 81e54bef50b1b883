"""Labelled test sets: readers for the benchmark layouts, detected automatically.

Every reader returns a list of :class:`TestVideo` (frames source + per-frame 0/1 labels):
  ped2      ``test/<video>/`` + ``labels/<video>.txt`` (one 0/1 per line; ../shared/data/ped2)
  ucsd      the original UCSD layout: ``TestNNN/*.tif`` + ``UCSDped{1,2}.m`` (gt_frame ranges)
  avenue    ``testing_videos/*.avi`` (or frame folders) + ``testing_label_mask/N_label.mat``
  shanghai  ``testing/frames/<video>/`` + ``test_frame_mask/<video>.npy``
  generic   ``<root>/{frames,videos,test}/...`` + ``<root>/labels/<video>.{txt,npy}``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.errors import DataError
from model.frames import VideoSource, discover, natural_key


@dataclass(frozen=True)
class TestVideo:
    name: str
    source: VideoSource
    labels: np.ndarray  # (N,) uint8, 1 = abnormal frame


def _read_label_file(path: Path) -> np.ndarray:
    """A video's per-frame labels: exactly 0 or 1 each (0/1 integers in a text file, or a .npy array of
    0/1 integers, booleans or floats 0.0/1.0). Anything else, 0.5 or -1 included, is refused rather
    than rounded or wrapped into a label."""
    try:
        if path.suffix == ".npy":
            raw = np.asarray(np.load(path, allow_pickle=False)).ravel()
        else:
            raw = np.array([int(x) for x in path.read_text().split()], dtype=np.int64)
    except (OSError, EOFError, ValueError) as e:  # ValueError: not an integer, not a .npy, pickled
        raise DataError(f"{path}: labels must be 0/1 values, one per frame ({e})") from None
    if raw.size == 0 or not np.isin(raw, (0, 1)).all():  # strings and NaN are neither
        raise DataError(f"{path}: labels must be a non-empty list of 0/1 values, one per frame")
    return raw.astype(np.uint8)


def _pair(sources: list[VideoSource], labels: dict[str, np.ndarray], where: Path) -> list[TestVideo]:
    missing = [s.name for s in sources if s.name not in labels]
    if missing:
        raise DataError(f"{where}: no labels for video(s) {', '.join(missing)}")
    return [TestVideo(s.name, s, labels[s.name]) for s in sources]


def read_ped2(root: Path) -> list[TestVideo]:
    return read_generic(root)


def read_generic(root: Path) -> list[TestVideo]:
    frames_dir = next((root / d for d in ("test", "frames", "videos") if (root / d).is_dir()), None)
    if frames_dir is None or not (root / "labels").is_dir():
        raise DataError(f"{root}: expected test/ (or frames/ or videos/) and labels/ folders")
    labels = {p.stem: _read_label_file(p) for p in (root / "labels").iterdir() if p.suffix in (".txt", ".npy")}
    return _pair(discover(frames_dir), labels, root)


def _ucsd_ranges(m_file: Path) -> list[np.ndarray]:
    """gt_frame ranges from UCSDped{1,2}.m, 1-based inclusive, in video order."""
    text = m_file.read_text()
    ranges = []
    for body in re.findall(r"gt_frame\s*=\s*\[([^\]]*)\]", text):
        frames: list[int] = []
        for a, b in re.findall(r"(\d+)\s*:\s*(\d+)", body):
            frames.extend(range(int(a), int(b) + 1))
        ranges.append(np.array(frames, dtype=int))
    if not ranges:
        raise DataError(f"{m_file}: no gt_frame entries found")
    return ranges


def read_ucsd(root: Path) -> list[TestVideo]:
    m_file = next(iter(sorted(root.glob("UCSDped*.m"))), None)
    if m_file is None:
        raise DataError(f"{root}: no UCSDped*.m ground-truth file")
    folders = sorted((p for p in root.iterdir() if re.fullmatch(r"Test\d+", p.name) and p.is_dir()),
                     key=lambda p: natural_key(p.name))
    ranges = _ucsd_ranges(m_file)
    if len(ranges) != len(folders):
        raise DataError(f"{m_file}: {len(ranges)} ground-truth entries for {len(folders)} TestNNN folders")
    videos = []
    for folder, abnormal in zip(folders, ranges, strict=True):
        (src,) = discover(folder)
        labels = np.zeros(len(src.frames), np.uint8)
        labels[abnormal[abnormal <= len(labels)] - 1] = 1
        videos.append(TestVideo(folder.name, src, labels))
    return videos


def read_avenue(root: Path) -> list[TestVideo]:
    from scipy.io import loadmat

    sources = {s.name.lstrip("0") or "0": s for s in discover(root / "testing_videos")}
    videos = []
    for mat in sorted((root / "testing_label_mask").glob("*_label.mat"), key=lambda p: natural_key(p.name)):
        key = mat.name.split("_")[0].lstrip("0")
        if key not in sources:
            raise DataError(f"{mat}: no testing video {key}")
        try:
            vol = loadmat(str(mat))["volLabel"]
            labels = np.array([int(np.asarray(m).any()) for m in vol.ravel()], dtype=np.uint8)
        except Exception as e:  # scipy's readers raise many kinds on a truncated or foreign file
            raise DataError(f"{mat}: not an Avenue label file (a MATLAB file with volLabel, one mask per "
                            f"frame): {type(e).__name__}: {e}") from None
        videos.append(TestVideo(sources[key].name, sources[key], labels))
    if not videos:
        raise DataError(f"{root}/testing_label_mask: no N_label.mat files")
    return videos


def read_shanghai(root: Path) -> list[TestVideo]:
    labels = {p.stem: _read_label_file(p) for p in (root / "test_frame_mask").glob("*.npy")}
    return _pair(discover(root / "testing" / "frames"), labels, root)


READERS = {"ped2": read_ped2, "ucsd": read_ucsd, "avenue": read_avenue, "shanghai": read_shanghai,
           "generic": read_generic}


def detect_layout(root: Path) -> str:
    if (root / "test_frame_mask").is_dir():
        return "shanghai"
    if (root / "testing_label_mask").is_dir():
        return "avenue"
    if any(root.glob("UCSDped*.m")):
        return "ucsd"
    if (root / "labels").is_dir() and (root / "test").is_dir():
        return "ped2"
    if (root / "labels").is_dir():
        return "generic"
    raise DataError(
        f"{root}: unknown test-set layout; expected one of: test/ + labels/ (ped2), TestNNN/ + UCSDped2.m, "
        "testing_videos/ + testing_label_mask/ (Avenue), testing/frames/ + test_frame_mask/ (ShanghaiTech), "
        "or frames/|videos/ + labels/"
    )


def read_test_set(path: str | Path, layout: str = "auto") -> tuple[str, list[TestVideo]]:
    """(layout name, videos) of a labelled test set."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    name = detect_layout(root) if layout == "auto" else layout
    if name not in READERS:
        raise DataError(f"unknown layout {layout!r}; choose auto or one of {', '.join(READERS)}")
    return name, READERS[name](root)
