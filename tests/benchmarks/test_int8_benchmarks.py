"""The benchmarks behind the int8 and bf16 numbers of RESULTS.md, on the tiny model: onnx_auc.py (the
accuracy each backend costs) and int8_study.py (where each int8 graph spends its time)."""

import pytest

from tests.benchmarks.test_bench_smoke import run_benchmark


def test_onnx_auc_scores_every_backend_on_the_test_set(tiny_checkpoint, footage, labelled_test_set, tmp_path):
    from model.cpu import native_cpu_bf16

    result, stdout = run_benchmark(tmp_path, "onnx_auc.py", "--model", str(tiny_checkpoint), "--data",
                                   str(labelled_test_set), "--calibration", str(footage))
    rows = {"fp32", "int8", "int8 static"} | ({"torch bf16"} if native_cpu_bf16() else set())
    assert {k for k in result if not k.endswith("_points")} == rows
    for name in rows:
        assert 0 <= result[name]["micro_auc"] <= 1 and result[name]["frames_per_s"] > 0
        assert f"{name}: micro AUC {100 * result[name]['micro_auc']:.2f}" in stdout
    for name in rows - {"fp32"}:
        gap = 100 * (result[name]["micro_auc"] - result["fp32"]["micro_auc"])
        assert result[f"{name}_minus_fp32_points"] == pytest.approx(gap)


@pytest.mark.slow
def test_int8_study(tiny_checkpoint, footage, tmp_path):
    result, stdout = run_benchmark(tmp_path, "int8_study.py", "--model", str(tiny_checkpoint), "--calibration",
                                   str(footage), "--repeats", "2")
    assert set(result["rows"]) == {"fp32, attention not fused", "fp32", "int8 dynamic", "int8 static",
                                   "int8 static, int8 outputs", "int8 static, convs too", "int8 static, attention too"}
    # each study choice reaches ONNX Runtime's int8 kernels: int8 convolutions, products with int8 outputs
    assert "QLinearConv" in result["rows"]["int8 static, convs too"]["profile"]
    assert "QLinearConv" not in result["rows"]["int8 static"]["profile"]
    assert "attention (fused)" in result["rows"]["fp32"]["profile"]
    # static int8 leaves attention to the fused kernel unless asked to quantise its products too
    assert "attention (fused)" in result["rows"]["int8 static"]["profile"]
    assert "attention (fused)" not in result["rows"]["int8 static, attention too"]["profile"]
    assert result["rows"]["int8 static"]["batch_dependence"] < 1e-5
    assert "attention (fused)" not in result["rows"]["fp32, attention not fused"]["profile"]
    for row in result["rows"].values():
        assert row["frames_per_s"] > 0 and sum(row["profile"].values()) == pytest.approx(1.0)
    assert result["rows"]["fp32"]["profile"]["weight GEMM"] > 0 and result["amdahl_bound_weight_int8"] > 1
    assert result["rows"]["fp32"]["batch_dependence"] < 1e-5  # fp32: a frame's score ignores its batch
    assert "at most" in stdout
