"""stream_id contexts: expiry after the TTL, the LRU bound, and putting back a failed request's frames."""

import time

import numpy as np
import pytest

from model.calibration import SCENE_CHECK_FRAMES, scene_check
from service.contexts import OffsetMismatch, StreamContexts
from service.errors import Conflict
from tests.conftest import scene_frames


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


def test_a_context_keeps_its_frames_not_the_request_they_came_in():
    """Between requests a context holds 7 frames, copied out of the request (256 frames of the shipped
    model's size are 9.8 MB, and up to 1,024 contexts live at once)."""
    context = StreamContexts(ttl_s=60, capacity=2).get("cam")
    request = scene_frames(64, 32, 48, seed=1)
    context.push(request, flush=False)
    kept = list(context.window.window._frames)
    assert len(kept) == 7 and not any(np.shares_memory(f, request) for f in kept)


def _indices(ready):
    return [t for t, _ in ready]


def test_a_failed_request_is_undone_unless_a_later_one_was_taken():
    clip = scene_frames(12, seed=3)
    context = StreamContexts(ttl_s=60, capacity=4).get("cam")
    assert _indices(context.push(clip[:5], flush=False).ready) == [0, 1]
    first = context.push(clip[5:9], flush=False)
    assert _indices(first.ready) == [2, 3, 4, 5] and first.pending == 3 and first.seen == 9
    assert first.undo()  # nothing came after it: back to 5 frames seen, 3 of them waiting
    assert context.window.seen == 5 and context.window.pending == 3
    again = context.push(clip[5:9], flush=False)
    assert _indices(again.ready) == [2, 3, 4, 5]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(again.ready, first.ready, strict=True))
    # two requests of one stream in flight: the first fails after the second was taken
    earlier = context.push(clip[9:10], flush=False)
    context.push(clip[10:12], flush=False)
    assert not earlier.undo()
    with pytest.raises(Conflict, match="DELETE /v1/score/streams/cam"):
        context.push(clip[9:10], flush=False)


def test_an_offset_that_is_not_where_the_stream_stands_is_refused_and_changes_nothing():
    clip = scene_frames(12, seed=3)
    context = StreamContexts(ttl_s=60, capacity=4).get("cam")
    with pytest.raises(OffsetMismatch, match=r"has 0 frames.*not 5.*new context") as refused:
        context.push(clip[5:9], flush=False, offset=5)  # e.g. the context expired
    assert refused.value.headers == {"X-Stream-Offset": "0"} and refused.value.status == 409
    assert context.push(clip[:5], flush=False, offset=0).seen == 5
    for stale in (0, 3, 9):  # a chunk sent twice, or one overtaken by a later one
        with pytest.raises(OffsetMismatch, match="starts at offset 5"):
            context.push(clip[5:9], flush=False, offset=stale)
    assert context.window.seen == 5
    assert _indices(context.push(clip[5:9], flush=False, offset=5).ready) == [2, 3, 4, 5]
