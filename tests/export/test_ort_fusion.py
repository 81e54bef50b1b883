"""Attention fusion for ONNX Runtime: every attention block of a real exported graph becomes one
MultiHeadAttention node, the outputs stay within fp32 parity, and anything that is not exactly the
pattern is left alone."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
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


def _attention_graph(extra_output: str | None = None, q_perm=(0, 2, 1, 3), axis=-1, back_perm=(0, 2, 1, 3),
                     scale_first=False, scale_input=False, scale_per_channel=False, heads_dim=2, shape_by_concat=False,
                     k_heads=None):
    """Standard-op attention as the exporter writes it, on (B, N, 8) inputs with 2 heads; the keywords
    bend one part of the pattern at a time (``extra_output`` names an inner tensor that the graph
    exports as well)."""
    b, n, heads, d = 2, 5, 2, 4
    nodes = [helper.make_node("Reshape", [x, "shape"], [x + "h"]) for x in "qv"]
    nodes.append(helper.make_node("Reshape", ["k", "shape" if k_heads is None else "k_shape"], ["kh"]))
    mul = (lambda x: [x, "s"]) if not scale_first else (lambda x: ["s", x])
    nodes += [helper.make_node("Transpose", ["qh"], ["qt"], perm=list(q_perm)),
              helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 2, 3, 1]),
              helper.make_node("Transpose", ["vh"], ["vt"], perm=[0, 2, 1, 3]),
              helper.make_node("Mul", mul("qt"), ["qs"]), helper.make_node("Mul", mul("kt"), ["ks"]),
              helper.make_node("MatMul", ["qs", "ks"], ["scores"]),
              helper.make_node("Softmax", ["scores"], ["p"], axis=axis),
              helper.make_node("MatMul", ["p", "vt"], ["o"]),
              helper.make_node("Transpose", ["o"], ["ot"], perm=list(back_perm)),
              helper.make_node("Reshape", ["ot", "merged"], ["y"])]
    inits = [helper.make_tensor("merged", TensorProto.INT64, [3], [b, n, heads * d])]
    if k_heads is not None:  # not attention any more (the products do not line up): never to be fused
        inits.append(helper.make_tensor("k_shape", TensorProto.INT64, [4], [b, n, k_heads, heads * d // k_heads]))
    shape = [b, n, heads_dim, d]
    if shape_by_concat:  # [b, n] ++ [heads] ++ [d]: three parts, not the exporter's four
        inits += [helper.make_tensor(f"part{i}", TensorProto.INT64, [len(p)], p)
                  for i, p in enumerate([[b, n], [heads_dim], [d]])]
        nodes.insert(0, helper.make_node("Concat", ["part0", "part1", "part2"], ["shape"], axis=0))
    else:
        inits.append(helper.make_tensor("shape", TensorProto.INT64, [4], shape))
    inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [b, n, heads * d]) for x in "qkv"]
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [(heads * d) ** -0.25])
    if scale_per_channel:
        scale = helper.make_tensor("s", TensorProto.FLOAT, [d], [0.5, 0.6, 0.7, 0.8])
    if scale_input:  # the scale fed at run time: not a constant the fused node could carry
        inputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, []))
    else:
        inits.append(scale)
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, n, heads * d])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info(extra_output, TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "attention", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feed(model):
    rng = np.random.default_rng(0)
    feed = {x: rng.standard_normal((2, 5, 8)).astype(np.float32) for x in "qkv"}
    if any(i.name == "s" for i in model.graph.input):
        feed["s"] = np.array(8 ** -0.25, dtype=np.float32)
    return feed


def _outputs(model, feed):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], feed)[0]


def test_hand_built_chain_matches_the_unfused_result():
    model = _attention_graph()
    want = _outputs(model, _feed(model))
    assert fuse_attention(model) == 1
    (node,) = model.graph.node
    assert node.op_type == "MultiHeadAttention" and list(node.input) == ["q", "k", "v"]
    assert ("com.microsoft", 1) in [(o.domain, o.version) for o in model.opset_import], "the domain it needs"
    np.testing.assert_allclose(_outputs(model, _feed(model)), want, rtol=1e-5, atol=1e-6)


def test_a_scale_written_on_the_left_is_read_as_well():
    model = _attention_graph(scale_first=True)  # Mul(s, x) instead of Mul(x, s)
    want = _outputs(model, _feed(model))
    assert fuse_attention(model) == 1
    np.testing.assert_allclose(_outputs(model, _feed(model)), want, rtol=1e-5, atol=1e-6)


def test_inferred_shapes_of_removed_tensors_go_with_them():
    model = onnx.shape_inference.infer_shapes(_attention_graph())
    assert {"scores", "p", "qt"} <= {vi.name for vi in model.graph.value_info}
    assert fuse_attention(model) == 1
    assert [vi.name for vi in model.graph.value_info] == [], "no shape is left for a tensor nothing produces"


@pytest.mark.parametrize("bend", [
    {"extra_output": "p"},  # the attention weights are read outside the chain
    {"extra_output": "qt"},  # so is the query's transpose
    {"q_perm": (0, 2, 3, 1)},  # the query transposed as a key (its product no longer lines up)
    {"axis": 2},  # softmax over the queries
    {"back_perm": (0, 1, 2, 3)},  # heads not merged back
    {"scale_input": True},  # a scale known only at run time
    {"scale_input": True, "scale_first": True},  # the same on the left
    {"scale_per_channel": True},  # a scale per channel, which the fused node has no room for
    {"heads_dim": -1},  # the heads left for Reshape to infer
    {"shape_by_concat": True},  # a shape of three parts, whose third is not the heads
    {"k_heads": 4},  # keys split into other heads than the queries
], ids=lambda bend: "+".join(bend))
def test_anything_but_the_exact_pattern_is_left_alone(bend):
    model = _attention_graph(**bend)
    before = model.SerializeToString()
    assert fuse_attention(model) == 0
    assert model.SerializeToString() == before


def test_shape_arithmetic_of_removed_reshapes_dies_with_them(tiny_onnx):
    """The exported graph computes each reshape's shape from Shape/Gather/Unsqueeze/Concat chains: once
    the reshapes are fused away, nothing of those chains may be left computing for nobody."""
    model = onnx.load(str(tiny_onnx))
    assert fuse_attention(model) > 0
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    idle = [n.name or n.op_type for n in model.graph.node if not any(o in read for o in n.output)]
    assert idle == []


def test_sessions_take_the_thread_count_and_stay_quiet(tiny_onnx, capfd):
    session = ort_session(tiny_onnx, threads=1)
    opts = session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    session.run(list(OUTPUT_NAMES), {"frames": load_bundle(tiny_onnx).golden_inputs()})
    assert capfd.readouterr().err == "", "ONNX Runtime's own logging stays off the server's stderr"


def test_tensorrt_reads_the_file_as_exported(tiny_onnx, monkeypatch):
    """TensorRT's provider cannot run contributed ops: with it among the providers the graph is not
    rewritten (on a machine without it ONNX Runtime warns and falls back to the CPU)."""
    def refuse(model):
        raise AssertionError("fused for TensorRT")

    monkeypatch.setattr("export.ort_fusion.fuse_attention", refuse)
    session = ort_session(tiny_onnx, providers=["TensorrtExecutionProvider", "CPUExecutionProvider"])
    assert session.get_providers()[-1] == "CPUExecutionProvider"
