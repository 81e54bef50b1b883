"""ONNX Runtime sessions of exported graphs, with attention fused into ONNX Runtime's own kernel.

The exported graph spells attention out in standard ops so that TensorRT and any other runtime can
read it:

    q, k, v (B, N, D) -> Reshape (B, N, heads, D/heads) -> Transpose (q, v: 0213; k: 0231)
    -> Mul by a constant (q, k) -> MatMul(q, k) -> Softmax -> MatMul(., v) -> Transpose 0213 -> Reshape (B, N, D)

ONNX Runtime runs that chain as separate kernels, materialising the (B, heads, N, N) scores twice.
Its contributed ``com.microsoft.MultiHeadAttention`` kernel does the same work in one node: on this
CPU attention's share of the time drops from 40% to 33% and the whole graph runs about 5% faster
(benchmarks/RESULTS.md, ``int8_study.py``). :func:`fuse_attention` rewrites each chain in
memory when a session is created; the file on disk is never changed, so its hash, its parity record
and TensorRT's view of it stay what the export wrote.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
MS_DOMAIN = "com.microsoft"


def _attr(node: Any, name: str) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


class _Graph:
    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        for out in graph.output:  # a graph output is read from outside: it cannot vanish into a fused node
            self.consumers.setdefault(out.name, []).append(out)
        self.constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant" and _attr(n, "value") is not None:
                self.constants[n.output[0]] = numpy_helper.to_array(_attr(n, "value"))

    def op(self, tensor: str, op_type: str, perm: list[int] | None = None) -> Any:
        """The node producing ``tensor`` if it is ``op_type`` (with this ``perm``, for a Transpose)
        and ``tensor`` feeds nothing else (so the node can go with the chain), else None."""
        node = self.producer.get(tensor)
        if node is None or node.op_type != op_type or len(self.consumers.get(tensor, [])) != 1:
            return None
        if perm is not None and list(_attr(node, "perm") or []) != perm:
            return None
        return node

    def scalar(self, tensor: str) -> float | None:
        value = self.constants.get(tensor)
        return float(np.asarray(value).reshape(())) if value is not None and np.size(value) == 1 else None

    def only_consumer(self, tensor: str, op_type: str) -> Any:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _heads(g: _Graph, tensor: str, perm: list[int], scaled: bool) -> tuple[str, int, float, list[Any]] | None:
    """Walk up [Mul by constant] <- Transpose(perm) <- Reshape(x, [b, n, heads, d]) to x.
    Returns (x, heads, scale factor, the nodes walked) or None."""
    nodes, factor = [], 1.0
    if scaled:
        mul = g.op(tensor, "Mul")
        if mul is None:
            return None
        consts = [g.scalar(i) for i in mul.input]
        side = 1 if consts[1] is not None else 0
        value = consts[side]
        if value is None:
            return None
        factor, tensor = value, mul.input[1 - side]
        nodes.append(mul)
    transpose = g.op(tensor, "Transpose", perm=perm)
    reshape = g.op(transpose.input[0], "Reshape") if transpose is not None else None
    if reshape is None:
        return None
    shape = g.producer.get(reshape.input[1])
    heads = g.scalar(shape.input[2]) if shape is not None and shape.op_type == "Concat" and len(shape.input) == 4 \
        else None
    if heads is None and reshape.input[1] in g.constants and np.size(g.constants[reshape.input[1]]) == 4:
        heads = float(g.constants[reshape.input[1]][2])
    if heads is None or heads < 1:
        return None
    return reshape.input[0], int(heads), factor, [*nodes, transpose, reshape]


def fuse_attention(model: Any) -> int:
    """Rewrite every attention chain of ``model`` (an onnx.ModelProto, changed in place) into one
    MultiHeadAttention node. Returns how many were fused; nodes left without consumers are removed."""
    from onnx import helper

    g = _Graph(model.graph)
    fused, doomed, new_nodes = 0, set[int](), {}
    for softmax in [n for n in model.graph.node if n.op_type == "Softmax" and _attr(n, "axis") in (-1, 3)]:
        scores = g.op(softmax.input[0], "MatMul")
        weighted = g.only_consumer(softmax.output[0], "MatMul")
        back = g.only_consumer(weighted.output[0], "Transpose") if weighted is not None else None
        merged = g.only_consumer(back.output[0], "Reshape") if back is not None else None
        if scores is None or merged is None or list(_attr(back, "perm") or []) != [0, 2, 1, 3]:
            continue
        q = _heads(g, scores.input[0], [0, 2, 1, 3], scaled=True)
        k = _heads(g, scores.input[1], [0, 2, 3, 1], scaled=True)
        v = _heads(g, weighted.input[1], [0, 2, 1, 3], scaled=False)
        if q is None or k is None or v is None or not q[1] == k[1] == v[1]:
            continue
        node = helper.make_node("MultiHeadAttention", [q[0], k[0], v[0]], [merged.output[0]], domain=MS_DOMAIN,
                                name=f"{softmax.name}/fused", num_heads=q[1], scale=q[2] * k[2])
        chain = [scores, softmax, weighted, back, merged, *q[3], *k[3], *v[3]]
        doomed.update(id(n) for n in chain)
        new_nodes[id(merged)] = node
        fused += 1
    if not fused:
        return 0
    kept = [new_nodes.get(id(n), n) for n in model.graph.node if id(n) not in doomed or id(n) in new_nodes]
    del model.graph.node[:]
    model.graph.node.extend(_live(kept, {o.name for o in model.graph.output}))
    produced = {o for n in model.graph.node for o in n.output}
    stale = [vi for vi in model.graph.value_info if vi.name not in produced]
    for vi in stale:
        model.graph.value_info.remove(vi)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return fused


def _live(nodes: list[Any], outputs: set[str]) -> list[Any]:
    """``nodes`` without those whose outputs nothing reads (repeated: shape arithmetic of the removed
    reshapes dies in chains)."""
    while True:
        read = {i for n in nodes for i in n.input} | outputs
        alive = [n for n in nodes if any(o in read for o in n.output)]
        if len(alive) == len(nodes):
            return alive
        nodes = alive


def session_options(threads: int | None = None) -> Any:
    """The project's ONNX Runtime session options: quiet logs, one inter-op thread, ``threads``
    intra-op threads (None: ONNX Runtime's default, one per core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    return opts


def ort_session(path: str | Path, threads: int | None = None, providers: list[Any] | None = None,
                fuse: bool = True, options: Any = None) -> Any:
    """An ONNX Runtime session of the graph at ``path`` with :func:`session_options` (or ``options``,
    built from it, for extras such as profiling), attention fused unless ``fuse`` is off (to measure
    the plain file) or TensorRT is among the providers (it cannot run contributed ops; it reads the
    standard graph instead)."""
    import onnx
    import onnxruntime as ort

    options = options or session_options(threads)
    providers = providers or ["CPUExecutionProvider"]
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    if not fuse or "TensorrtExecutionProvider" in names:
        return ort.InferenceSession(str(path), options, providers=providers)
    model = onnx.load(str(path))
    count = fuse_attention(model)
    log.info("%s: %d attention blocks fused into ONNX Runtime's MultiHeadAttention", path, count)
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
