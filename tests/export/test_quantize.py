"""int8 graphs (export/quantize.py) on the tiny model: tolerance, what each mode quantises, batch
independence of static int8, and the calibration frames it takes its ranges from."""

import numpy as np
import onnx
import pytest

from export.bundle import compare_outputs, load_bundle
from export.onnx_export import run_onnxruntime
from export.quantize import activation_products, calibration_windows, quantize_int8
from model.errors import AedmaeError
from tests.conftest import write_frame_folder


def quantised_matmuls(model):
    """Names of the MatMuls whose both operands come out of a DequantizeLinear."""
    dequantised = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if n.op_type == "MatMul" and all(i in dequantised for i in n.input)}


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_graphs_stay_within_the_int8_tolerance(tiny_onnx, tmp_path, mode):
    from export.quantize import quantize_int8

    bundle = load_bundle(tiny_onnx)
    frames = bundle.golden_inputs()
    q = quantize_int8(tiny_onnx, tmp_path / f"{mode}.onnx", mode, calibration=frames)
    model = onnx.load(str(q))
    quantised_ops = {"dynamic": "DynamicQuantizeLinear", "static": "QuantizeLinear"}[mode]
    assert any(n.op_type == quantised_ops for n in model.graph.node)
    assert not list(tmp_path.glob("*.prepared.onnx"))
    parity = compare_outputs(run_onnxruntime(q, frames), run_onnxruntime(tiny_onnx, frames), "int8")
    assert parity["ok"], parity


def test_static_int8_without_calibration_frames_is_a_clear_error(tiny_onnx, tmp_path):
    from export.quantize import quantize_int8

    empty = load_bundle(tiny_onnx).golden_inputs()[:0]
    for calibration in (None, empty):
        with pytest.raises(AedmaeError, match="needs calibration frames"):
            quantize_int8(tiny_onnx, tmp_path / "s.onnx", "static", calibration=calibration)


def test_static_int8_calibrates_on_every_batch_of_frames(tiny_onnx, tmp_path):
    """Activation ranges come from all the calibration frames, not the first batch: a last batch of
    noise after flat gray frames widens them."""
    from export.quantize import quantize_int8

    gray = np.full_like(load_bundle(tiny_onnx).golden_inputs()[:1], 128).repeat(4, axis=0)
    noise = np.random.default_rng(0).integers(0, 256, gray[:1].shape, dtype=np.uint8)

    def scales(frames, name):
        model = onnx.load(str(quantize_int8(tiny_onnx, tmp_path / name, "static", calibration=frames, batch=4)))
        return [float(onnx.numpy_helper.to_array(i)) for i in model.graph.initializer if i.name.endswith("_scale")
                and i.dims == []]

    first, both = scales(gray, "first.onnx"), scales(np.concatenate([gray, noise]), "both.onnx")
    assert len(first) == len(both) > 0
    assert np.mean(np.array(both) > np.array(first)) > 0.5


def test_activation_products_are_the_attention_matmuls(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    constants = {i.name for i in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    products = activation_products(tiny_onnx)
    # two per attention block (q.k and weights.v): the tiny model has some, and weight products besides
    assert products and len(products) % 2 == 0 and len(products) < len(matmuls)
    for n in matmuls:
        assert (n.name in products) == (not any(i in constants for i in n.input)), n.name


@pytest.mark.parametrize("attention", [False, True])
def test_static_int8_quantises_the_attention_products_only_when_asked(tiny_onnx, tmp_path, attention):
    frames = load_bundle(tiny_onnx).golden_inputs()
    q = quantize_int8(tiny_onnx, tmp_path / "s.onnx", "static", calibration=frames, attention_products=attention)
    quantised = quantised_matmuls(onnx.load(str(q)))
    products = set(activation_products(tiny_onnx))
    assert quantised & products == (products if attention else set())
    assert quantised - products  # the weight products always run in int8


def test_static_int8_scores_a_frame_the_same_in_any_batch(tiny_onnx, tmp_path):
    """Ranges fixed at calibration: a frame's outputs do not depend on the frames the dynamic batcher
    puts beside it (dynamic int8 scales each call's activations by that call's range)."""
    bundle = load_bundle(tiny_onnx)
    q = quantize_int8(tiny_onnx, tmp_path / "s.onnx", "static", calibration=bundle.golden_inputs())
    frames = np.random.default_rng(5).integers(0, 256, (6, *bundle.golden_inputs().shape[1:]), dtype=np.uint8)
    together = run_onnxruntime(q, frames, batch=6)
    for i in range(len(frames)):
        alone = run_onnxruntime(q, frames[i : i + 1], batch=1)
        for name, value in alone.items():
            np.testing.assert_allclose(value[0], together[name][i], rtol=1e-5, atol=1e-6, err_msg=name)


def test_calibration_windows_spread_over_every_video(tmp_path, monkeypatch):
    monkeypatch.setenv("AEDMAE_CACHE_DIR", str(tmp_path / "cache"))
    for k in range(3):  # three videos of one grey level each: 50, 110, 170
        write_frame_folder(tmp_path / "train", f"{k:02d}", np.full((12, 24, 36, 1), 50 + 60 * k, np.uint8))
    windows = calibration_windows(tmp_path / "train", (24, 36), 1, count=6)
    assert windows.shape == (6, 3, 24, 36, 1) and windows.dtype == np.uint8
    assert sorted(windows.mean(axis=(1, 2, 3, 4)).tolist()) == [50, 50, 110, 110, 170, 170]  # two per video
    np.testing.assert_array_equal(windows, calibration_windows(tmp_path / "train", (24, 36), 1, count=6))
