"""Training on a CUDA GPU (bf16 autocast): both stages run and learn, and the checkpoint scores the
same frames alike on the GPU and the CPU. Skips without a GPU; benchmarks/gpu_check.sh runs it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model import checkpoint
from model.scoring import score_frames
from model.training import Trainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_both_stages_learn_under_bf16_autocast_and_score_alike_on_cpu(footage, tmp_path, tiny):
    model_cfg, train_cfg = tiny
    train_cfg = dataclasses.replace(train_cfg, device="cuda", epochs_teacher=4, epochs_student=3, batch_size=4)
    summary = Trainer([str(footage)], tmp_path / "run", model_cfg, train_cfg, cache_dir=tmp_path / "cache",
                      progress=False).run()
    teacher, student = summary["stages"]["teacher"]["losses"], summary["stages"]["student"]["losses"]
    assert teacher[-1] < teacher[0] * 0.9 and student[-1] < student[0] * 0.9, (teacher, student)
    net, _ = checkpoint.load(tmp_path / "run")
    frames = torch.randint(0, 256, (4, 3, *model_cfg.image_size, model_cfg.channels), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        cpu = score_frames(net, frames).score
        gpu = score_frames(net.cuda(), frames.cuda()).score.cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-6)
