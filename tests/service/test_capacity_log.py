"""The start-up log line that turns the golden clip's rate into cameras (service.app.log_capacity)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from service.app import log_capacity


def runtime(rates: list[float], grids: int, gap: int = 3) -> SimpleNamespace:
    return SimpleNamespace(readiness={"startup_frames_per_second": {"per_worker": rates, "frames": 12, "batch": 12}},
                           bundle=SimpleNamespace(context_gap=gap, grid_shifts=grids))


@pytest.mark.parametrize(("rates", "grids", "level", "remedy"), [
    ([2.1], 4, logging.WARNING, "one token grid instead of 4 cost 1/4"),  # the shipped model on a 2-core AVX2 CPU
    ([2.1], 1, logging.WARNING, None),  # nothing lighter to suggest
    ([1.0, 9.0], 4, logging.INFO, None),  # the fastest worker keeps up with one shed camera (8.3 frames/s)
    ([8.4], 4, logging.INFO, None),
])
def test_a_machine_too_slow_for_one_shed_camera_is_warned_about(caplog, rates, grids, level, remedy):
    caplog.set_level(logging.INFO, logger="aedmae.service")
    log_capacity(runtime(rates, grids))  # type: ignore[arg-type]
    [record] = [r for r in caplog.records if "golden clip" in r.getMessage()]
    message = record.getMessage()
    assert record.levelno == level, message
    assert f"at {max(rates):.1f} frames/s per worker" in message and "needs 25.0 frames/s, 8.3 while" in message
    assert ("cannot keep up" in message) == (level == logging.WARNING)
    assert (remedy in message) if remedy is not None else ("one token grid" not in message), message
