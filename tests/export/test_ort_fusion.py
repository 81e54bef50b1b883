"""Attention fusion for ONNX Runtime: every attention block of a real exported graph becomes one
MultiHeadAttention node, the outputs stay within fp32 parity, and anything that is not exactly the
pattern is left alone."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from export.bundle import OUTPUT_NAMES, compare_outputs, load_bundle, sha256
from export.ort_fusion import fuse_attention, ort_session


def _run(session, frames):
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"frames": frames}), strict=True))


def test_every_attention_block_is_fused_with_fp32_parity(tiny_onnx):
    bundle = load_bundle(tiny_onnx)
    cfg = bundle.sidecar["model"]
    before = sha256(tiny_onnx)
    model = onnx.load(str(tiny_onnx))
    softmaxes = sum(n.op_type == "Softmax" for n in model.graph.node)
    assert fuse_attention(model) == softmaxes == cfg["depth"] + cfg["decoder_depth"] + 1
    ops = [n.op_type for n in model.graph.node]
    assert "Softmax" not in ops and ops.count("MultiHeadAttention") == softmaxes
    frames = bundle.golden_inputs()
    plain = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    parity = compare_outputs(_run(ort_session(tiny_onnx), frames), _run(plain, frames), "fp32")
    assert parity["ok"], parity
    assert sha256(tiny_onnx) == before, "the file on disk is never changed"


def _attention_graph(extra_output: bool):
    """Standard-op attention as the exporter writes it, on (B, N, 8) inputs with 2 heads."""
    b, n, heads, d = 2, 5, 2, 4
    nodes = [helper.make_node("Reshape", [x, "shape"], [x + "h"]) for x in "qkv"]
    nodes += [helper.make_node("Transpose", ["qh"], ["qt"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 2, 3, 1]),
              helper.make_node("Transpose", ["vh"], ["vt"], perm=[0, 2, 1, 3]),
              helper.make_node("Mul", ["qt", "s"], ["qs"]), helper.make_node("Mul", ["kt", "s"], ["ks"]),
              helper.make_node("MatMul", ["qs", "ks"], ["scores"]),
              helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "vt"], ["o"]),
              helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ot", "merged"], ["y"])]
    inits = [helper.make_tensor("shape", TensorProto.INT64, [4], [b, n, heads, d]),
             helper.make_tensor("merged", TensorProto.INT64, [3], [b, n, heads * d]),
             helper.make_tensor("s", TensorProto.FLOAT, [], [(heads * d) ** -0.25])]
    inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [b, n, heads * d]) for x in "qkv"]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, n, heads * d])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, [b, heads, n, n]))
    graph = helper.make_graph(nodes, "attention", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_hand_built_chain_matches_the_unfused_result():
    model = _attention_graph(extra_output=False)
    rng = np.random.default_rng(0)
    feed = {x: rng.standard_normal((2, 5, 8)).astype(np.float32) for x in "qkv"}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert fuse_attention(model) == 1
    (node,) = model.graph.node
    assert node.op_type == "MultiHeadAttention" and list(node.input) == ["q", "k", "v"]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_chain_whose_parts_are_read_elsewhere_is_left_alone():
    model = _attention_graph(extra_output=True)  # the attention weights are a graph output too
    before = model.SerializeToString()
    assert fuse_attention(model) == 0
    assert model.SerializeToString() == before
