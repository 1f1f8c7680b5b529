"""all-MiniLM-L6-v2's encoder as an ONNX graph built from the published weights.

:func:`build_encoder_onnx` makes a standard ONNX model (opset 17, built with ``onnx.helper``)
from the embedding output to the last hidden state: the graph the graph compiler imports.

Inputs: ``hidden`` float32 ``[batch, seq, 384]`` (``MiniLM.embed``: embeddings after their
LayerNorm) and ``mask_bias`` float32 ``[batch, 1, 1, seq]`` (additive attention mask: 0 on real
keys, -1e4 on padding; ``minilm.attention_bias``). Output:
``last_hidden_state`` float32 ``[batch, seq, 384]`` (and optionally the intermediates of every
layer, :data:`INTERMEDIATES`, used for calibration).

Per layer ``i`` (node names prefixed ``l{i}.``): ``MatMul`` + ``Add`` for each linear (weights as
initializers, transposed to ``[in, out]``); heads by ``Reshape`` ``[b, s, 12, 32]`` and
``Transpose`` (K to ``[b, h, 32, s]``); ``MatMul`` Q K^T, ``Mul`` by 1/sqrt(32), ``Add``
``mask_bias``, ``Softmax`` (axis -1), ``MatMul`` with V, ``Transpose`` + ``Reshape`` back; residual
``Add`` and ``LayerNormalization`` (axis -1, epsilon from the config); FFN with GELU written as
``x * 0.5 * (1 + Erf(x / sqrt 2))`` (``Div``, ``Erf``, ``Add``, ``Mul``).
"""

from __future__ import annotations

import math

import numpy as np

from .minilm import MiniLM, _require

__all__ = ["OPSET", "INTERMEDIATES", "build_encoder_onnx", "run_onnxruntime"]

OPSET = 17
# per-layer tensors that ``build_encoder_onnx(..., intermediates=True)`` also outputs, as
# ``l{i}.{name}`` (``[batch, seq, width]``); the quantizer calibrates on them
INTERMEDIATES = ("q", "k", "v", "ctx", "attn", "res1", "ln1", "ff1", "gelu", "ff2", "res2", "out")


def build_encoder_onnx(model: MiniLM, layers: int | None = None, intermediates: bool = False):
    """The ``onnx.ModelProto`` of the first ``layers`` (default: all) encoder layers, checked
    with ``onnx.checker``. With ``intermediates`` the graph also outputs the tensors of
    :data:`INTERMEDIATES` of every layer (after ``last_hidden_state``)."""
    onnx = _require("onnx")
    from onnx import TensorProto, helper, numpy_helper
    c = model.config
    layers = c.layers if layers is None else int(layers)
    if not 1 <= layers <= c.layers:
        raise ValueError(f"layers must be in 1..{c.layers}, not {layers}")
    d, h, hd = c.hidden, c.heads, c.head_dim
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op, ins, name, **attrs):
        nodes.append(helper.make_node(op, ins, [name], name=name, **attrs))
        return name

    split_shape = const("shape.heads", np.array([0, 0, h, hd], dtype=np.int64))
    merge_shape = const("shape.merge", np.array([0, 0, d], dtype=np.int64))
    inv_sqrt = const("attn.scale", np.array(1.0 / math.sqrt(hd), dtype=np.float32))
    sqrt2 = const("gelu.sqrt2", np.array(math.sqrt(2.0), dtype=np.float32))
    one = const("gelu.one", np.array(1.0, dtype=np.float32))
    half = const("gelu.half", np.array(0.5, dtype=np.float32))

    x = "hidden"
    for i in range(layers):
        W = model.layer(i)
        p = f"l{i}."

        def linear(inp, lin, out):
            w = const(p + lin + ".weight", np.ascontiguousarray(W[lin + ".weight"].T))
            b = const(p + lin + ".bias", W[lin + ".bias"])
            return node("Add", [node("MatMul", [inp, w], out + ".mm"), b], out)

        def ln(inp, lnname, out):
            g = const(p + lnname + ".weight", W[lnname + ".weight"])
            b = const(p + lnname + ".bias", W[lnname + ".bias"])
            return node("LayerNormalization", [inp, g, b], out, axis=-1, epsilon=c.eps)

        q = linear(x, "attention.self.query", p + "q")
        k = linear(x, "attention.self.key", p + "k")
        v = linear(x, "attention.self.value", p + "v")
        qh = node("Transpose", [node("Reshape", [q, split_shape], p + "q.r")], p + "q.h",
                  perm=[0, 2, 1, 3])
        kt = node("Transpose", [node("Reshape", [k, split_shape], p + "k.r")], p + "k.t",
                  perm=[0, 2, 3, 1])
        vh = node("Transpose", [node("Reshape", [v, split_shape], p + "v.r")], p + "v.h",
                  perm=[0, 2, 1, 3])
        s = node("Mul", [node("MatMul", [qh, kt], p + "qk"), inv_sqrt], p + "scores")
        pr = node("Softmax", [node("Add", [s, "mask_bias"], p + "scores.m")], p + "probs",
                  axis=-1)
        ctx = node("Transpose", [node("MatMul", [pr, vh], p + "ctx.h")], p + "ctx.t",
                   perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape], p + "ctx")
        attn = linear(ctx, "attention.output.dense", p + "attn")
        a = ln(node("Add", [attn, x], p + "res1"), "attention.output.LayerNorm", p + "ln1")
        f1 = linear(a, "intermediate.dense", p + "ff1")
        erf = node("Erf", [node("Div", [f1, sqrt2], p + "gelu.div")], p + "gelu.erf")
        g = node("Mul", [node("Mul", [f1, node("Add", [erf, one], p + "gelu.add")],
                              p + "gelu.mul"), half], p + "gelu")
        f2 = linear(g, "output.dense", p + "ff2")
        x = ln(node("Add", [f2, a], p + "res2"), "output.LayerNorm", p + "out")

    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["batch", "seq", d])]
    if intermediates:
        outputs += [helper.make_tensor_value_info(
                        f"l{i}.{n}", TensorProto.FLOAT,
                        ["batch", "seq", c.intermediate if n in ("ff1", "gelu") else d])
                    for i in range(layers) for n in INTERMEDIATES]
    graph = helper.make_graph(
        nodes, "all-MiniLM-L6-v2-encoder",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", d]),
         helper.make_tensor_value_info("mask_bias", TensorProto.FLOAT,
                                       ["batch", 1, 1, "seq"])],
        outputs, initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="openlpu")
    m.ir_version = min(m.ir_version, 8)        # readable by onnxruntime >= 1.17
    onnx.checker.check_model(m)
    return m


def run_onnxruntime(onnx_model, hidden, mask_bias, outputs=("last_hidden_state",)):
    """Run the graph on onnxruntime's CPU provider (one thread): ``last_hidden_state``, or a
    dict name -> array when ``outputs`` names several graph outputs (or is None: all)."""
    ort = _require("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()] if outputs is None else list(outputs)
    res = sess.run(names, {"hidden": np.asarray(hidden, dtype=np.float32),
                           "mask_bias": np.asarray(mask_bias, dtype=np.float32)})
    if outputs is not None and tuple(outputs) == ("last_hidden_state",):
        return res[0]
    return dict(zip(names, res))
