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


def test_export_checks_the_engine_against_onnx_runtime_in_profile_batches(tiny_onnx, tmp_path, monkeypatch, capsys):
    """What `aedmae export tensorrt` does after the build, with the build and the engine stood in for
    (TensorRT cannot run here): the golden clip through the engine in batches of the profile's max
    batch, compared with ONNX Runtime; an engine that disagrees is an error and does not replace the
    engine already at --out."""
    import numpy as np

    import export.tensorrt_build
    import export.tensorrt_runtime
    from export.onnx_export import run_onnxruntime

    batches: list[int] = []

    class Engine:  # runs the ONNX graph, as a correct engine would
        def __init__(self, path, bias: float = 0.0) -> None:
            self.bias = bias

        def infer(self, frames):
            batches.append(len(frames))
            out = run_onnxruntime(tiny_onnx, frames)
            return out | {"score": out["score"] + self.bias * np.abs(out["score"])}

    built = []

    def build_engine(onnx, out, profile, workspace_mb, timing_cache):  # writes what the real one writes
        built.append(len(built))
        out.write_text(f"engine {len(built)}")
        out.with_name(out.name + ".json").write_text("{}")
        return {"engine": {"tensorrt_version": "fake"}}

    monkeypatch.setattr(export.tensorrt_build, "build_engine", build_engine)
    monkeypatch.setattr(export.tensorrt_runtime, "TensorRTRunner", Engine)
    engine = str(tmp_path / "m.engine")
    assert main(["export", "tensorrt", "--onnx", str(tiny_onnx), "--out", engine, "--max-batch", "4",
                 "--opt-batch", "4"]) == 0
    frames = len(load_bundle(tiny_onnx).golden_inputs())
    assert batches == [4] * (frames // 4) + ([frames % 4] if frames % 4 else [])
    assert "'ok': True" in capsys.readouterr().out
    monkeypatch.setattr(export.tensorrt_runtime, "TensorRTRunner", lambda path: Engine(path, bias=0.01))
    assert main(["export", "tensorrt", "--onnx", str(tiny_onnx), "--out", engine, "--max-batch", "4",
                 "--opt-batch", "4"]) == 2
    assert "disagrees with ONNX Runtime" in capsys.readouterr().err
    assert built == [0, 1] and (tmp_path / "m.engine").read_text() == "engine 1"  # the failed one never moved in
    assert sorted(p.name for p in tmp_path.iterdir() if "m.engine" in p.name) == ["m.engine", "m.engine.json"]
