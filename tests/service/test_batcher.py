"""The batching policy with fake backends (logic only; the live-server tests use real ones)."""

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from service.batcher import Batcher, Job
from service.errors import DeadlineExceeded, InferenceFailed, Overloaded
from service.metrics import Metrics


class RecordingBackend:
    name = "fake"

    def __init__(self, max_batch=8, delay_s=0.0, fail_on=None):
        self.max_batch = max_batch
        self.delay_s = delay_s
        self.fail_on = fail_on  # frames whose first pixel equals this value poison their batch
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def infer(self, frames):
        self.gate.wait()
        time.sleep(self.delay_s)
        self.batches.append(len(frames))
        if self.fail_on is not None and np.any(frames[:, 0, 0, 0, 0] == self.fail_on):
            raise RuntimeError("poisoned batch")
        value = frames[:, 0, 0, 0, 0].astype(np.float32)
        return {"score": value, "heatmap": np.zeros((len(frames), 2, 2), np.float32)}


def job(value, deadline_s=10.0):
    return Job(np.full((3, 2, 2, 1), value, np.uint8), time.monotonic() + deadline_s)


def make(backend, **kw):
    params = {"max_batch": 4, "max_delay_s": 0.05, "capacity": 100} | kw
    b = Batcher([backend], params["max_batch"], params["max_delay_s"], params["capacity"], Metrics())
    b.start()
    return b


def test_full_batches_and_results_in_order():
    backend = RecordingBackend()
    backend.gate.clear()  # hold the worker so that the queue fills first
    b = make(backend)
    jobs = [job(i) for i in range(8)]
    b.submit(jobs)
    backend.gate.set()
    assert [float(j.future.result(5)["score"]) for j in jobs] == list(range(8))
    assert backend.batches[-1] == 4 and sum(backend.batches) == 8
    b.stop()
    assert b.metrics.batches.labels(trigger="full")._value.get() >= 1


def test_timeout_closes_a_partial_batch():
    backend = RecordingBackend()
    b = make(backend, max_delay_s=0.05)
    t0 = time.monotonic()
    j = job(1)
    b.submit([j])
    j.future.result(5)
    waited = time.monotonic() - t0
    assert backend.batches == [1] and waited >= 0.045
    assert b.metrics.batches.labels(trigger="timeout")._value.get() == 1
    b.stop()


def test_the_delay_counts_from_the_first_frame_of_a_batch_not_the_latest():
    """Frames trickling in every 0.1 s against a 0.25 s delay: each batch closes 0.25 s after its first
    frame, with about 3 frames, rather than waiting on while frames keep coming (which would hold all
    twelve until the trickle stopped). The margin allows a worker stall of 0.3 s."""
    backend = RecordingBackend()
    b = make(backend, max_batch=64, max_delay_s=0.25)
    jobs = []
    for i in range(12):
        jobs.append(job(i))  # (a job's clock starts when it is made)
        b.submit(jobs[-1:])
        time.sleep(0.1)
    [j.future.result(5) for j in jobs]
    b.stop()
    assert sum(backend.batches) == 12 and len(backend.batches) >= 2 and backend.batches[0] <= 6, backend.batches


def test_retry_after_is_the_queue_over_the_batches_every_worker_runs():
    backends = [RecordingBackend(), RecordingBackend()]
    for backend in backends:
        backend.gate.clear()
    b = Batcher(backends, 4, 0.05, 100, Metrics())
    b.submit([job(i) for i in range(40)])  # not started: all 40 stay queued
    b._last_batch_s = 0.5
    assert b.retry_after_s() == pytest.approx(40 / 4 * 0.5 / 2)


def test_overflow_is_refused_all_or_nothing_with_retry_after():
    backend = RecordingBackend()
    backend.gate.clear()
    b = make(backend, capacity=5)
    b.submit([job(i) for i in range(4)])
    with pytest.raises(Overloaded) as err:
        b.submit([job(9), job(9)])
    assert "Retry-After" in err.value.headers and int(err.value.headers["Retry-After"]) >= 1
    assert b.depth <= 4 and b.metrics.rejected.labels(reason="queue_full")._value.get() == 1
    backend.gate.set()
    b.stop()


def held_after_one_batch(**kw):
    """A batcher whose worker has taken a first one-job batch and waits at the backend's gate."""
    backend = RecordingBackend()
    backend.gate.clear()
    b = make(backend, max_delay_s=0.0, **kw)
    b.submit([job(0)])
    deadline = time.monotonic() + 5
    while b.depth and time.monotonic() < deadline:
        time.sleep(0.005)
    return backend, b


@pytest.mark.parametrize("capacity", [100, 8])
def test_cancelled_jobs_take_no_place_in_a_batch_or_the_queue(capacity):
    """A camera's superseded frames (cancelled while queued) are dropped where the worker takes its
    batch, and a full queue sheds them before it refuses a frame: with 8 places, 8 cancelled jobs and 8
    live ones fit, and the live ones make two full batches (on an overloaded camera server, batches of
    dead jobs and a queue of them refusing live frames cost real-time cameras: benchmarks/RESULTS.md,
    session 24)."""
    backend, b = held_after_one_batch(capacity=capacity)
    dead, live = [], []
    for v in range(2, 10):  # in turns, as cameras queue them: each live frame supersedes the one before
        dead.append(job(1))
        b.submit(dead[-1:])
        b.cancel(dead[-1:])
        assert dead[-1].future.cancelled()
        live.append(job(v))
        b.submit(live[-1:])
    backend.gate.set()
    assert [float(j.future.result(5)["score"]) for j in live] == list(range(2, 10))
    assert backend.batches == [1, 4, 4]
    assert b.metrics.rejected.labels(reason="queue_full")._value.get() == 0
    b.stop()


class CountingFuture(Future):
    checks = 0

    def cancelled(self):
        CountingFuture.checks += 1
        return super().cancelled()


def test_a_full_queue_neither_refuses_nor_admits_by_walking_its_jobs():
    """Refusing is what an overloaded server does most, and on a full queue of cameras every frame
    supersedes a queued one: neither may walk the queue (O(capacity) under the lock and the GIL: 0.2 ms
    a request at 512 on the CPU testbed, benchmarks/batcher_cost.py). Cancelled jobs are counted out
    of the queue's depth at once, and dropped from it in one walk per capacity/2 cancellations."""
    backend, b = held_after_one_batch(capacity=8)
    queued = [Job(np.zeros((3, 2, 2, 1), np.uint8), time.monotonic() + 10, future=CountingFuture()) for _ in range(8)]
    b.submit(queued)
    CountingFuture.checks = 0
    refused = [job(1) for _ in range(3)]
    for j in refused:
        with pytest.raises(Overloaded):
            b.submit([j])
    b.cancel(refused)  # never queued: cancelling them frees no place
    assert b.depth == 8
    b.cancel(queued[:1])
    b.submit([job(1)])  # takes the cancelled job's place
    with pytest.raises(Overloaded):
        b.submit([job(1)])
    assert CountingFuture.checks == 0 and b.depth == 8
    b.cancel(queued[1:5])  # 5 cancelled > 8 // 2: the next admission drops them
    b.submit([job(2) for _ in range(4)])
    assert CountingFuture.checks == 8 and b.depth == 8 and len(b._queue) == 8
    backend.gate.set()
    assert all(j.future.cancelled() for j in queued[:5]) and all(j.future.result(5) for j in queued[5:])
    b.stop()


def test_expired_jobs_fail_without_running():
    backend = RecordingBackend()
    backend.gate.clear()
    b = make(backend, max_batch=1)
    first, late = job(1), job(2, deadline_s=0.01)
    b.submit([first, late])
    time.sleep(0.05)
    backend.gate.set()
    first.future.result(5)
    with pytest.raises(DeadlineExceeded):
        late.future.result(5)
    assert backend.batches == [1]
    b.stop()


def test_failed_batch_fails_only_its_jobs_and_serving_continues():
    backend = RecordingBackend(fail_on=13)
    b = make(backend, max_batch=2, max_delay_s=0.2)
    bad = [job(13), job(1)]
    b.submit(bad)
    for j in bad:
        with pytest.raises(InferenceFailed, match="poisoned"):
            j.future.result(5)
    good = [job(2), job(3)]
    b.submit(good)
    assert [float(j.future.result(5)["score"]) for j in good] == [2, 3]
    assert b.metrics.inference_errors.labels(reason="backend_error")._value.get() == 1
    b.stop()


def test_a_backend_returning_too_few_rows_fails_its_batch_not_the_worker():
    """A faulty backend answers a batch of 2 with 1 row: that batch fails (500), the worker lives on
    (before, the IndexError ended its thread and every later request waited for its deadline)."""

    class ShortBackend(RecordingBackend):
        def infer(self, frames):
            out = super().infer(frames)
            return {k: v[:1] for k, v in out.items()} if len(frames) == 2 else out

    b = make(ShortBackend(), max_batch=2, max_delay_s=0.2)
    short = [job(4), job(5)]
    b.submit(short)
    for j in short:
        with pytest.raises(InferenceFailed, match=r"returned \[1\] rows for 2 frames"):
            j.future.result(5)
    alone = job(6)
    b.submit([alone])
    assert float(alone.future.result(5)["score"]) == 6
    b.stop()


def test_shutdown_drains_in_flight_work():
    backend = RecordingBackend(delay_s=0.02)
    b = make(backend, max_batch=2, max_delay_s=0.0)
    jobs = [job(i) for i in range(10)]
    b.submit(jobs)
    b.stop()
    assert all(j.future.done() and not j.future.exception() for j in jobs)
    from service.errors import NotReady

    with pytest.raises(NotReady):
        b.submit([job(1)])


def test_several_workers_share_the_queue():
    backends = [RecordingBackend(delay_s=0.01), RecordingBackend(delay_s=0.01)]
    b = Batcher(backends, 2, 0.0, 100, Metrics())
    b.start()
    jobs = [job(i) for i in range(40)]
    b.submit(jobs)
    assert sorted(float(j.future.result(5)["score"]) for j in jobs) == list(range(40))
    assert all(sum(x.batches) > 0 for x in backends)
    b.stop()


def test_the_cancelled_count_stays_exact_while_threads_submit_and_cancel_against_two_workers():
    """Cameras and requests submit and cancel from their own threads while workers take batches: the
    depth never goes below zero or above capacity, no job is lost (each ends scored or cancelled), and
    once everything is done the queue and its count of cancelled jobs are both empty."""
    import random

    b = Batcher([RecordingBackend(delay_s=0.005), RecordingBackend(delay_s=0.005)], 8, 0.001, 24, Metrics())
    b.start()
    done, depths, lock = [], [], threading.Lock()

    def client(seed):
        rng = random.Random(seed)
        mine = []
        for _ in range(150):
            group = [job(1) for _ in range(rng.randint(1, 4))]
            try:
                b.submit(group)
                mine += group
            except Overloaded:
                pass
            if mine and rng.random() < 0.4:  # recent jobs, as a camera supersedes its latest frames
                b.cancel(rng.sample(mine[-8:], min(len(mine[-8:]), rng.randint(1, 3))))
            depths.append(b.depth)
        with lock:
            done.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for j in done:
        assert j.future.cancelled() or float(j.future.result(10)["score"]) == 1.0
    b.stop()
    assert min(depths) >= 0 and max(depths) <= 24
    assert len(b._queue) == 0 and b._cancelled == 0 and b.depth == 0
    assert any(j.future.cancelled() for j in done) and any(not j.future.cancelled() for j in done)
