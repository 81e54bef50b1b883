"""int8 graphs (export/quantize.py) on the tiny model: tolerance, what each mode quantises, batch
independence of static int8, and the calibration frames it takes its ranges from."""

import numpy as np
import onnx
import pytest

from export.bundle import compare_outputs, load_bundle
from export.onnx_export import run_onnxruntime
from export.quantize import activation_products, calibration_windows, quantize_int8
from model.errors import AedmaeError
from tests.conftest import npy_body, scene_frames, wait_for, write_frame_folder


def quantised_matmuls(model):
    """Names of the MatMuls whose both operands come out of a DequantizeLinear."""
    dequantised = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if n.op_type == "MatMul" and all(i in dequantised for i in n.input)}


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_graphs_stay_within_the_int8_tolerance(tiny_onnx, tmp_path, mode):
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
    empty = load_bundle(tiny_onnx).golden_inputs()[:0]
    for calibration in (None, empty):
        with pytest.raises(AedmaeError, match="needs calibration frames"):
            quantize_int8(tiny_onnx, tmp_path / "s.onnx", "static", calibration=calibration)


def test_static_int8_calibrates_on_every_batch_of_frames(tiny_onnx, tmp_path):
    """Activation ranges come from all the calibration frames, not the first batch: a last batch of
    noise after flat gray frames widens them."""
    gray = np.full_like(load_bundle(tiny_onnx).golden_inputs()[:1], 128).repeat(4, axis=0)
    noise = np.random.default_rng(0).integers(0, 256, gray[:1].shape, dtype=np.uint8)

    def scales(frames, name):
        model = onnx.load(str(quantize_int8(tiny_onnx, tmp_path / name, "static", calibration=frames, batch=4)))
        values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        return [float(values[n.input[1]]) for n in model.graph.node  # ranges of activations, not weights
                if n.op_type == "QuantizeLinear" and n.input[0] not in values]

    first, both = scales(gray, "first.onnx"), scales(np.concatenate([gray, noise]), "both.onnx")
    assert len(first) == len(both) > 0
    assert np.all(np.array(both) >= np.array(first)) and np.mean(np.array(both) > np.array(first)) > 0.5


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


def test_static_int8_study_choices_change_only_what_they_name(tiny_onnx, tmp_path):
    """The two choices int8_study.py times beside the export: convolutions in int8 (their inputs come
    out of DequantizeLinear, which they never do by default) and products requantising their outputs
    (a QuantizeLinear after each weight product, where by default they hand fp32 to the next op)."""
    frames = load_bundle(tiny_onnx).golden_inputs()

    def structure(name, **choice):
        model = onnx.load(str(quantize_int8(tiny_onnx, tmp_path / name, "static", calibration=frames, **choice)))
        dequantised = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        quantised = {i for n in model.graph.node if n.op_type == "QuantizeLinear" for i in n.input}
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        int8_convs = sum(all(i in dequantised for i in n.input[:2]) for n in convs)
        products = quantised_matmuls(model)
        requantised = sum(n.output[0] in quantised for n in model.graph.node if n.name in products)
        return len(convs), int8_convs, len(products), requantised

    convs, int8_convs, products, requantised = structure("default.onnx")
    assert convs > 0 and int8_convs == 0 and products > 0 and requantised == 0
    assert structure("convs.onnx", convolutions=True)[1] == convs
    assert structure("outputs.onnx", int8_product_outputs=True)[3] == products
    for name, choice in (("convs.onnx", {"convolutions": True}), ("outputs.onnx", {"int8_product_outputs": True})):
        q = tmp_path / name
        parity = compare_outputs(run_onnxruntime(q, frames), run_onnxruntime(tiny_onnx, frames), "int8")
        assert parity["ok"], (choice, parity)


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


def test_int8_export_checks_itself_and_serves(tiny_checkpoint, tmp_path, capsys, caplog, monkeypatch):
    """`aedmae export onnx --precision int8 --int8-footage DIR`: the same checks as fp32 (PyTorch parity
    under the int8 tolerance, identical results across batch sizes), the ranges recorded in the
    sidecar, and the server scores with it through the real HTTP stack."""
    import shutil

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.cli import main
    from service.settings import Settings

    footage = tmp_path / "train"
    for i in range(2):
        write_frame_folder(footage, f"v{i}", scene_frames(30, 32, 48, seed=i))
    folder = tmp_path / "int8"
    shutil.copytree(tiny_checkpoint, folder)
    assert main(["export", "onnx", "--model", str(folder), "--out", str(folder / "model.onnx"),
                 "--precision", "int8", "--int8-footage", str(footage)]) == 0
    assert f"activation ranges from frames of {footage}" in capsys.readouterr().out
    bundle = load_bundle(folder)
    side = bundle.sidecar
    assert bundle.precision == "int8"
    assert side["int8"] == {"mode": "static, weight products", "footage": str(footage), "windows": 60}
    assert side["parity_vs_pytorch"]["ok"] and side["parity_vs_pytorch"]["tolerance"]["score_rtol"] == 0.05
    assert all(v["ok"] and v["tolerance"]["score_rtol"] == 1e-4 for v in side["batch_parity"].values())
    assert quantised_matmuls(onnx.load(str(bundle.graph)))
    scores = {}
    monkeypatch.setattr("service.app.int8_dot_products", lambda: False)  # as on a CPU without VNNI
    for model in (tiny_checkpoint, folder):
        caplog.clear()
        with TestClient(create_app(Settings(model=model))) as client:
            assert wait_for(lambda: client.get("/readyz").status_code == 200, 60)  # golden parity passed
            precision = client.get("/v1/model").json()["precision"]
            r = client.post("/v1/score", content=npy_body(scene_frames(5, 32, 48, seed=7)),
                            headers={"content-type": "application/x-npy"})
            assert r.status_code == 200, r.text
            scores[precision] = np.array([f["score"] for f in r.json()["frames"]])
        # an int8 model on a CPU without int8 dot products: said at start-up, served all the same
        assert ("no int8 dot-product instructions" in caplog.text) == (precision == "int8")
    assert len(scores["int8"]) == len(scores["fp32"]) == 5
    np.testing.assert_allclose(scores["int8"], scores["fp32"], rtol=0.05)
    assert not np.array_equal(scores["int8"], scores["fp32"])  # it did run the int8 graph


@pytest.mark.parametrize(("args", "message"), [
    (["--precision", "int8"], "--int8-footage DIR"),
    (["--int8-footage", "FOOTAGE"], "only int8 uses"),
    (["--precision", "int8", "--int8-footage", "EMPTY"], "no frames"),
])
def test_int8_export_without_usable_footage_is_a_clear_error(tiny_checkpoint, tmp_path, capsys, args, message):
    from service.cli import main

    (tmp_path / "EMPTY").mkdir()
    write_frame_folder(tmp_path / "FOOTAGE", "v0", np.zeros((4, 32, 48, 3), np.uint8))
    args = [str(tmp_path / a) if a in ("FOOTAGE", "EMPTY") else a for a in args]
    out = tmp_path / "x.onnx"
    assert main(["export", "onnx", "--model", str(tiny_checkpoint), "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err and not out.exists()
