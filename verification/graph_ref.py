"""Integer reference of a graph (:mod:`openlpu.firmware.graph`): every node evaluated with the
reference functions of the chip's instructions (``openlpu.vxm_ops``, ``verification/reference.py``),
on a graph of any pass (import, tidy, quantize) or on the kernel plan of the lower / allocate
passes.

A requantize without ``multiplier`` / ``shift`` (before the quantize pass) takes them from the
scales as the quantize pass does (:func:`openlpu.firmware.graph.quant.multiplier_for`); a
rescale, gelu or residual likewise (``passes.node_rescale``, ``node_gelu_quant``,
``residual_rescale``). Those three ops are evaluated by the MiniLM integer references
(``verification/models/minilm_int.py``: ``rescale``, ``gelu_int``, ``residual_int``).
"""

from __future__ import annotations

import numpy as np

from openlpu import vxm_ops
from openlpu.firmware.graph import Graph, KernelPlan, multiplier_for
from openlpu.firmware.norm import rmsnorm_consts, softmax_consts

from openlpu.firmware.graph.passes import node_gelu_quant, node_rescale, residual_rescale
from openlpu.host.models.minilm_quant import GeluQuant, Rescale

from openlpu.firmware.attention import attention_consts

from .models.minilm_int import attention_head_int, gelu_int, rescale, residual_int
from .reference import attention_int, rmsnorm_int, softmax_int

__all__ = ["evaluate", "run_graph", "evaluate_plan"]


def _requant(acc, attrs, acc_scale):
    m, s = attrs.get("multiplier"), attrs.get("shift")
    if m is None:
        scales = np.asarray(acc_scale, dtype=np.float64).reshape(-1)
        pairs = [multiplier_for(float(x) / attrs["out_scale"]) for x in scales]
        m, s = [p[0] for p in pairs], [p[1] for p in pairs]
        if len(set(pairs)) == 1:
            m, s = m[0], s[0]
    if isinstance(m, list):
        return np.stack([vxm_ops.requantize(acc[:, j], m[j], s[j]) for j in range(acc.shape[1])],
                        axis=1)
    return vxm_ops.requantize(acc, int(m), int(s))


def _rescale(g, n):
    if "mult" in n.attrs:
        from openlpu.firmware.graph.quant import DTYPE_CODE
        return Rescale(np.asarray(n.attrs["mult"], dtype=np.int64), int(n.attrs["shift"]),
                       DTYPE_CODE[n.attrs["dtype"]])
    return node_rescale(g, n)


def _gelu(g, n):
    q = node_gelu_quant(g, n)
    a = n.attrs
    if "idx_mult" not in a:
        return q
    return GeluQuant(q.in_scale, Rescale(np.asarray([a["idx_mult"]]), a["idx_shift"], 2),
                     q.table, q.c_scale, Rescale(np.asarray([a["c_mult"]]), a["c_shift"], 2),
                     Rescale(np.asarray(a["out_mult"]), a["out_shift"], q.out.dtype),
                     q.out_scale)


def _node(g: Graph, n, vals):
    x = [vals[i] for i in n.inputs]
    if n.op == "matmul":
        w = x[1].T if n.attrs.get("transpose_b") else x[1]
        return x[0].astype(np.int64) @ w.astype(np.int64)
    if n.op == "bias_add":
        return x[0] + x[1][None, :]
    if n.op == "requantize":
        return _requant(x[0], n.attrs, g.values[n.inputs[0]].quant.scale)
    if n.op == "relu":
        return np.maximum(x[0], 0)
    if n.op == "add":
        return vxm_ops.binary_op("ADD", x[0], x[1], 0)
    if n.op == "softmax":
        return softmax_int(x[0], softmax_consts(n.attrs["scale"]))["Y"]
    if n.op == "rmsnorm":
        a = n.attrs
        c = rmsnorm_consts(x[0].shape[1], np.asarray(a["gamma"]), a["eps"], a["in_scale"],
                           a["out_scale"])
        return rmsnorm_int(x[0], c)["Y"]
    if n.op == "rescale":
        return rescale(x[0], _rescale(g, n))
    if n.op == "gelu":
        return gelu_int(x[0], _gelu(g, n))
    if n.op == "residual":
        rq = residual_rescale(g, n)
        if "mult" in n.attrs:
            rq = Rescale(np.asarray([n.attrs["mult"]]), int(n.attrs["shift"]), 2)
        return residual_int(x[0], x[1], rq)
    if n.op == "attention":
        H = n.attrs["heads"]
        d = x[0].shape[1] // H
        c = attention_consts(n.attrs["scale"])
        out = []
        for h in range(H):
            q, k, v = (t[:, h * d:(h + 1) * d] for t in x)
            if "key_mask" in n.attrs:
                out.append(attention_head_int(q, k, v, c, np.asarray(n.attrs["key_mask"]))["O"])
            else:
                out.append(attention_int(q, k, v, c, causal=n.attrs["causal"])["O"])
        return np.concatenate(out, axis=1)
    if n.op == "qlinear":
        w = x[1].T if n.attrs.get("transpose_b") else x[1]
        acc = x[0].astype(np.int64) @ w.astype(np.int64)
        if n.attrs.get("bias"):
            acc = acc + x[2][None, :]
        if n.attrs.get("epilogue") == "rescale":
            return rescale(acc, _rescale(g, n))
        y = _requant(acc, n.attrs, n.attrs["acc_scale"])
        return np.maximum(y, 0) if n.attrs.get("relu") else y
    raise ValueError(f"node {n.name!r}: the reference has no op {n.op!r}")


def evaluate(g: Graph, inputs: dict) -> dict:
    """Every value of ``g`` (name -> int64 array) for the given input arrays; nodes in list
    order (a graph after the import pass is in topological order)."""
    missing = set(g.inputs) - set(inputs)
    if missing:
        raise ValueError(f"graph {g.name!r}: missing input(s) {', '.join(sorted(missing))}")
    vals = {k: np.asarray(v, dtype=np.int64) for k, v in inputs.items()}
    vals.update({v.name: v.data for v in g.values.values() if v.is_const})
    for n in g.nodes:
        vals[n.outputs[0]] = _node(g, n, vals)
    return vals


def run_graph(g: Graph, inputs: dict) -> dict:
    """The graph's outputs (name -> int64 array)."""
    vals = evaluate(g, inputs)
    return {o: vals[o] for o in g.outputs}


def evaluate_plan(plan: KernelPlan, inputs: dict) -> dict:
    """The outputs of a kernel plan (lower / allocate pass): each kernel's node evaluated in
    kernel order (a kernel that does not follow its producers fails with a KeyError)."""
    g = plan.graph
    by_name = {n.name: n for n in g.nodes}
    vals = {k: np.asarray(v, dtype=np.int64) for k, v in inputs.items()}
    vals.update({v.name: v.data for v in g.values.values() if v.is_const})
    for k in plan.kernels:
        n = by_name[k.name]
        vals[n.outputs[0]] = _node(g, n, vals)
    return {o: vals[o] for o in g.outputs}
