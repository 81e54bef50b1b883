"""stream_id contexts: expiry after the TTL and the LRU bound."""

import time

from service.contexts import StreamContexts


def test_contexts_expire_and_stay_bounded():
    store = StreamContexts(ttl_s=0.2, capacity=2)
    a, _ = store.get("a")
    assert store.get("a")[0] is a  # the same window while in use
    store.get("b")
    store.get("c")  # over capacity: the least recently used ("a") goes
    assert store.get("a")[0] is not a
    b, _ = store.get("b")
    time.sleep(0.3)
    assert store.get("b")[0] is not b  # idle past the TTL: a fresh window
    assert store.drop("b") and not store.drop("b")
