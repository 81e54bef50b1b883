import importlib.util

import pytest

from export.bundle import load_bundle
from export.tensorrt_build import BatchProfile, TensorRTUnavailable, engine_sidecar, import_tensorrt
from model.errors import AedmaeError
from service.cli import main

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_profile_from_settings():
    p = BatchProfile(1, 8, 32).validate()
    assert p.shapes((3, 32, 48, 3)) == ((1, 3, 32, 48, 3), (8, 3, 32, 48, 3), (32, 3, 32, 48, 3))
    with pytest.raises(AedmaeError, match="min <= opt <= max"):
        BatchProfile(4, 2, 8).validate()


def test_engine_sidecar(tiny_onnx):
    bundle = load_bundle(tiny_onnx)
    side = engine_sidecar(bundle.sidecar, bundle.graph, BatchProfile(2, 4, 16), "11.0.0", {"device": "H200"}, 512, 3.2)
    e = side["engine"]
    assert e["source_onnx_sha256"] == bundle.sidecar["sha256"] and e["tensorrt_version"] == "11.0.0"
    assert e["input_shapes"]["max"] == (16, 3, 32, 48, 3) and e["profile"]["opt_batch"] == 4
    assert side["calibration"] == bundle.sidecar["calibration"] and side["precision"] == "fp32"


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks the error without it")
def test_clear_error_without_tensorrt(tiny_onnx, tmp_path, capsys):
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        import_tensorrt()
    assert main(["export", "tensorrt", "--onnx", str(tiny_onnx), "--out", str(tmp_path / "m.engine")]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert not (tmp_path / "m.engine").exists()
