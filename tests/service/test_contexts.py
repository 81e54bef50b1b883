"""stream_id contexts: expiry after the TTL and the LRU bound."""

import time

import numpy as np

from model.calibration import SCENE_CHECK_FRAMES, scene_check
from service.contexts import StreamContexts


def test_contexts_expire_and_stay_bounded():
    store = StreamContexts(ttl_s=0.2, capacity=2)
    a = store.get("a")
    assert store.get("a") is a  # the same context while in use
    store.get("b")
    store.get("c")  # over capacity: the least recently used ("a") goes
    assert store.get("a") is not a
    b = store.get("b")
    time.sleep(0.3)
    assert store.get("b") is not b  # idle past the TTL: a fresh context
    assert store.drop("b") and not store.drop("b")


def test_context_tally_is_the_scene_check_over_the_streams_frames():
    context = StreamContexts(ttl_s=60, capacity=2).get("cam")
    assert context.tally([float("nan")] * 5) == scene_check([])  # an uncalibrated model never warns
    for _ in range(SCENE_CHECK_FRAMES // 10):
        seen = context.tally([1.0] * 10)
    assert seen == scene_check(np.ones(SCENE_CHECK_FRAMES)) and seen["warning"]
    assert context.tally([0.1, 0.2]) == scene_check(np.r_[np.ones(SCENE_CHECK_FRAMES), 0.1, 0.2])
