import numpy as np
import pytest
import torch

from model import checkpoint
from model.config import preset
from model.evaluation import fit_scorer
from model.network import AEDMAE
from tests.conftest import scene_frames


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny seeded model with token statistics and calibration fitted on generated footage."""
    torch.manual_seed(0)
    cfg = preset("tiny")[0]
    net = AEDMAE(cfg).eval()
    clips = [(f"v{i}", scene_frames(20, *cfg.image_size, seed=i)) for i in range(2)]
    _, meta = fit_scorer(net, clips)
    return checkpoint.save(net, tmp_path_factory.mktemp("ckpt"), **meta)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory):
    from export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(tiny_checkpoint, out)
    return out


def frames_batch(n, cfg, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, *cfg.image_size, cfg.channels), dtype=np.uint8)
