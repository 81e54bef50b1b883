"""The torch backend on a CUDA GPU: CUDA graphs per batch size, fp16/bf16, one stream per worker.
Skips without a GPU; benchmarks/gpu_check.sh runs it on one (results in benchmarks/RESULTS.md)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from export.bundle import compare_outputs, infer_in_batches, load_bundle
from model.shipped import SHIPPED_DIR
from service.backends import create_backend
from service.settings import Settings

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def backend(**kw):
    settings = Settings(backend="torch", device="cuda", max_batch_size=8, **kw)
    return create_backend("torch", load_bundle(SHIPPED_DIR), settings)


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16")])
def test_cuda_graphs_match_the_onnx_reference_on_the_golden_clip(precision, tolerance):
    bundle = load_bundle(SHIPPED_DIR)
    got = infer_in_batches(backend(precision=precision), bundle.golden_inputs(), 8)
    result = compare_outputs(got, bundle.golden_reference(), tolerance)
    print(f"\ntorch cuda {precision} + CUDA graphs vs ONNX Runtime fp32 (tolerance {tolerance}): {result}")
    assert result["ok"], result


def test_padding_a_batch_up_to_its_captured_graph_changes_no_frame():
    frames = load_bundle(SHIPPED_DIR).golden_inputs()[:8]
    b = backend()
    whole = b.infer(frames)
    for size in (1, 3, 5):  # graphs of 1, 4 and 8 frames; 3 and 5 are padded
        got = infer_in_batches(b, frames, size)
        assert compare_outputs(got, whole, "fp32")["ok"], size
    again = b.infer(frames)
    for k in whole:  # the same graph on the same frames: bit for bit
        assert np.array_equal(again[k], whole[k]), k


def test_eager_on_the_side_stream_matches_the_captured_graphs():
    frames = load_bundle(SHIPPED_DIR).golden_inputs()[:8]
    eager, graphs = backend(cuda_graphs=False).infer(frames), backend().infer(frames)
    assert compare_outputs(eager, graphs, "fp32")["ok"]


def test_workers_on_their_own_streams_give_serial_results_when_run_together():
    frames = load_bundle(SHIPPED_DIR).golden_inputs()[:8]
    inputs = [np.roll(frames, i, axis=0) for i in range(6)]
    workers = [backend(), backend()]
    serial = [workers[0].infer(x)["score"] for x in inputs]
    workers[1].infer(inputs[0])  # captured before serving, as the runtime's warm-up does
    got: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            for _ in range(10):
                for i, x in enumerate(inputs):
                    got[(w, i)] = workers[w].infer(x)["score"]
        except BaseException as e:  # a thread's exception would otherwise only be a warning
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(got) == 2 * len(inputs)
    for (_, i), score in got.items():
        np.testing.assert_allclose(score, serial[i], rtol=1e-5)
