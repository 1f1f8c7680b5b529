"""The graph IR: quantized integer tensors (values) and operators (nodes) in a :class:`Graph`.

A :class:`Value` is a named tensor: shape, dtype (``int8``, ``int16``, ``int32``), quantization
(:class:`Quant`: real = scale * (q - zero_point), ``scale`` one float or, with ``axis``, one
per channel along that axis) and, for a constant, its integer data (weights). A :class:`Node`
applies an operator (``op``, one of :data:`OPS`) to input values and defines output values,
with attributes (``attrs``, JSON-able). Every value is defined once: by ``g.input``,
``g.const`` or one node.

The builder methods of :class:`Graph` (``g.input``, ``g.const``, ``g.matmul``, ``g.linear``,
``g.requantize``, ``g.rescale``, ``g.relu``, ``g.add``, ``g.softmax``, ``g.gelu``,
``g.residual``, ``g.attention``, ``g.rmsnorm``, ``g.output``) infer each output's shape,
dtype and quantization and raise :class:`GraphError` naming the node when operands do not fit.
The graph is plain data: :meth:`Graph.to_json` / :meth:`Graph.dump` give it as JSON and text,
the same graph always the same text (node order is insertion order until the ``import`` pass
sorts it).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GraphError", "Quant", "Value", "Node", "Graph", "OPS", "DTYPE_RANGE"]

#: dtype -> (min, max)
DTYPE_RANGE = {"int8": (-128, 127), "int16": (-(1 << 15), (1 << 15) - 1),
               "int32": (-(1 << 31), (1 << 31) - 1)}

#: Operators: name -> one-line meaning (the semantics are those of the integer reference,
#: verification/graph_ref.py, which follows the chip's instructions).
OPS = {
    "matmul": "int8 (M x K) @ int8 (K x N) -> int32, scale = scale_x * scale_w; with "
              "transpose_b, w is (N x K) and the product x @ w^T",
    "bias_add": "int32 + int32 constant bias per output column (N,)",
    "requantize": "int32 -> int8: saturate(round(x * multiplier / 2**(31 + shift))) (VREQ)",
    "relu": "max(x, 0) on int8",
    "add": "int8 + int8 (VXM ADD, wraps on overflow), operands of one scale",
    "softmax": "row softmax of int8 X with real unit `scale` -> int8 round(127 p)",
    "rescale": "int32 -> int8 / int16 / int32: saturate(round_half_up(x * mult[c] / "
               "2**shift)), one shift for all channels (VREQ for int8, VMULSHR [+ VCAST])",
    "rmsnorm": "row RMSNorm of int8 x: x / sqrt(mean(x^2) + eps) * gamma -> int8 of unit "
               "out_scale (reference.rmsnorm_int)",
    "gelu": "int16 -> int8 (or int16) GELU: relu(x) minus a correction read from a 256-entry "
            "table (minilm_int.gelu_int)",
    "residual": "int32 a + int16 x brought to a's unit (VMULSHR), saturated to int16 "
                "(minilm_int.residual_int)",
    "attention": "multi-head softmax(q k^T scale [+ masks]) v of int8 (seq, heads*d) "
                 "tensors, heads split and merged by columns -> int8 in v's unit "
                 "(reference.attention_int / minilm_int.attention_head_int)",
    "qlinear": "fused matmul [+ bias] + requantize [+ relu] or + rescale (made by the tidy "
               "pass)",
}


class GraphError(ValueError):
    """A graph is malformed or an operator's operands do not fit; the message names the node."""


@dataclass
class Quant:
    """real = scale * (q - zero_point); ``axis`` is the channel axis of a per-channel scale."""
    scale: object = 1.0
    zero_point: int = 0
    axis: int | None = None

    def scales(self, n: int | None = None) -> np.ndarray:
        """The scale(s) as a float64 array (length ``n`` when per-channel is broadcast)."""
        s = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        return np.broadcast_to(s, (n,)).copy() if n is not None and s.size == 1 else s

    def to_json(self):
        s = self.scale
        return {"scale": [float(x) for x in s] if isinstance(s, (list, tuple, np.ndarray))
                else float(s), "zero_point": int(self.zero_point), "axis": self.axis}


@dataclass
class Value:
    """A tensor of the graph; ``data`` holds a constant's integers (None for activations)."""
    name: str
    shape: tuple
    dtype: str
    quant: Quant = field(default_factory=Quant)
    data: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    def to_json(self):
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
             "quant": self.quant.to_json()}
        if self.data is not None:
            d["data_sha256"] = hashlib.sha256(
                np.ascontiguousarray(self.data, dtype=np.int64).tobytes()).hexdigest()[:16]
        return d


@dataclass
class Node:
    """``outputs = op(inputs; attrs)``; inputs and outputs are value names."""
    name: str
    op: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)

    def to_json(self):
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "attrs": _jsonable(self.attrs)}


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


class Graph:
    """A dataflow graph of quantized integer tensors; see the module docstring.

    ``values``: name -> :class:`Value`; ``nodes``: list of :class:`Node`; ``inputs`` /
    ``outputs``: value names (the program's inputs and outputs).
    """

    def __init__(self, name: str = "graph"):
        self.name = name
        self.values: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []

    # -- plumbing ------------------------------------------------------------------------------
    def copy(self) -> "Graph":
        g = Graph(self.name)
        g.values = {k: copy.copy(v) for k, v in self.values.items()}
        g.nodes = [Node(n.name, n.op, list(n.inputs), list(n.outputs), copy.deepcopy(n.attrs))
                   for n in self.nodes]
        g.inputs, g.outputs = list(self.inputs), list(self.outputs)
        return g

    def producer(self) -> dict:
        """value name -> the node that defines it."""
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict:
        """value name -> the nodes that read it, in node order."""
        out: dict = {}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n)
        return out

    def _new_name(self, base: str) -> str:
        if base not in self.values and all(n.name != base for n in self.nodes):
            return base
        i = 1
        while f"{base}_{i}" in self.values or any(n.name == f"{base}_{i}" for n in self.nodes):
            i += 1
        return f"{base}_{i}"

    def _value(self, v, node: str, what: str) -> Value:
        name = v.name if isinstance(v, Value) else v
        if not isinstance(name, str) or name not in self.values:
            raise GraphError(f"node {node!r}: {what} {name!r} is not a value of graph "
                             f"{self.name!r}")
        return self.values[name]

    def _add_value(self, name, shape, dtype, quant, data=None) -> Value:
        if not isinstance(name, str) or not name:
            raise GraphError(f"graph {self.name!r}: a value name must be a non-empty string, "
                             f"not {name!r}")
        if name in self.values:
            raise GraphError(f"graph {self.name!r}: value {name!r} is defined twice")
        if dtype not in DTYPE_RANGE:
            raise GraphError(f"value {name!r}: dtype {dtype!r} is not one of "
                             f"{', '.join(DTYPE_RANGE)}")
        shape = tuple(int(x) for x in shape)
        if len(shape) not in (1, 2) or min(shape) < 1:
            raise GraphError(f"value {name!r}: shape {shape} is not a non-empty 1-D or 2-D shape")
        _check_quant(name, quant, shape)
        v = Value(name, shape, dtype, quant, data)
        self.values[name] = v
        return v

    def _node(self, op, inputs, outs, attrs, name=None) -> list:
        """Add a node of ``op``; ``outs`` are (name, shape, dtype, quant) of its outputs."""
        nn = self._new_name(name or op)
        vals = [self._add_value(o[0], *o[1:]) for o in outs]
        self.nodes.append(Node(nn, op, [i.name for i in inputs], [v.name for v in vals],
                               dict(attrs)))
        return vals

    def _out_name(self, name, node_op):
        return self._new_name(name or node_op)

    # -- the builder -----------------------------------------------------------------------------
    def input(self, name: str, shape, dtype: str = "int8", *, scale=1.0,
              zero_point: int = 0) -> Value:
        """A program input (written by the host)."""
        v = self._add_value(name, shape, dtype, Quant(scale, zero_point))
        self.inputs.append(v.name)
        return v

    def const(self, name: str, data, dtype: str = "int8", *, scale=1.0, zero_point: int = 0,
              axis: int | None = None) -> Value:
        """A constant (weights, biases): integer ``data`` of ``dtype``, placed in the program's
        MEM image."""
        a = np.asarray(data)
        if not np.issubdtype(a.dtype, np.integer):
            raise GraphError(f"constant {name!r}: data must be integers, not {a.dtype}")
        lo, hi = DTYPE_RANGE.get(dtype, (0, -1))
        if a.size and (a.min() < lo or a.max() > hi):
            raise GraphError(f"constant {name!r}: values outside {dtype} range [{lo}, {hi}]")
        return self._add_value(name, a.shape, dtype, Quant(scale, zero_point, axis),
                               a.astype(np.int64))

    def output(self, v, name: str | None = None) -> Value:
        """Mark ``v`` as a program output (``name`` renames it)."""
        val = self._value(v, "output", "value")
        if name is not None and name != val.name:
            if name in self.values:
                raise GraphError(f"output: name {name!r} is taken")
            self._rename(val.name, name)
            val = self.values[name]
        if val.name in self.outputs:
            raise GraphError(f"output: {val.name!r} is already an output")
        if val.name in self.inputs or val.is_const:
            raise GraphError(f"output: {val.name!r} is an input or a constant, not computed")
        self.outputs.append(val.name)
        return val

    def _rename(self, old, new):
        v = self.values.pop(old)
        v.name = new
        self.values[new] = v
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
            n.outputs = [new if o == old else o for o in n.outputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    def matmul(self, x, w, *, transpose_b: bool = False, name: str | None = None) -> Value:
        """``x @ w``: int8 ``x`` (M x K) and int8 ``w`` (K x N; a constant, the weights) ->
        int32 (M x N), scale ``scale_x * scale_w`` (per output column when ``w`` has
        per-channel scales on axis 1). With ``transpose_b``, ``x @ w^T`` of an int8 ``w``
        (N x K), e.g. the scores ``Q @ K^T`` of two activations."""
        nn = name or self._new_name("matmul")
        x, w = self._value(x, nn, "input"), self._value(w, nn, "weight")
        _want(nn, x, "int8", 2)
        _want(nn, w, "int8", 2)
        kw = w.shape[1] if transpose_b else w.shape[0]
        if x.shape[1] != kw:
            raise GraphError(f"node {nn!r} (matmul): {x.name} is {x.shape}, {w.name} is "
                             f"{w.shape}{' (transposed)' if transpose_b else ''}; inner "
                             f"dimensions {x.shape[1]} != {kw}")
        if transpose_b and w.quant.axis is not None:
            raise GraphError(f"node {nn!r} (matmul): per-channel scales of a transposed "
                             f"operand are not supported")
        if x.quant.zero_point or w.quant.zero_point:
            raise GraphError(f"node {nn!r} (matmul): zero points must be 0 (symmetric int8), "
                             f"got {x.quant.zero_point} and {w.quant.zero_point}")
        if w.quant.axis not in (None, 1):
            raise GraphError(f"node {nn!r} (matmul): per-channel weight scales must be on axis "
                             f"1 (output columns), not {w.quant.axis}")
        N = w.shape[0] if transpose_b else w.shape[1]
        s = x.quant.scales()[0] * w.quant.scales(N if w.quant.axis == 1 else None)
        q = Quant(s.tolist(), 0, 1) if w.quant.axis == 1 else Quant(float(s[0]))
        return self._node("matmul", [x, w], [(f"{nn}.out", (x.shape[0], N), "int32", q)],
                          {"transpose_b": True} if transpose_b else {}, nn)[0]

    def bias_add(self, acc, bias, *, name: str | None = None) -> Value:
        """int32 ``acc`` (M x N) + an int32 constant ``bias`` (N,) of the accumulator's scale."""
        nn = name or self._new_name("bias_add")
        acc, b = self._value(acc, nn, "input"), self._value(bias, nn, "bias")
        _want(nn, acc, "int32", 2)
        _want(nn, b, "int32", 1)
        if not b.is_const or b.shape[0] != acc.shape[1]:
            raise GraphError(f"node {nn!r} (bias_add): bias {b.name} must be a constant of "
                             f"shape ({acc.shape[1]},), is {b.shape}")
        return self._node("bias_add", [acc, b], [(f"{nn}.out", acc.shape, "int32",
                                                  copy.copy(acc.quant))], {}, nn)[0]

    def requantize(self, acc, out_scale: float, *, multiplier: int | None = None,
                   shift: int | None = None, name: str | None = None) -> Value:
        """int32 -> int8 of real unit ``out_scale``; the multiplier and shift are chosen by the
        quantize pass from the scales unless given."""
        nn = name or self._new_name("requantize")
        acc = self._value(acc, nn, "input")
        _want(nn, acc, "int32", 2)
        if not (isinstance(out_scale, (int, float)) and out_scale > 0):
            raise GraphError(f"node {nn!r} (requantize): out_scale must be a positive number, "
                             f"not {out_scale!r}")
        attrs = {"out_scale": float(out_scale)}
        if (multiplier is None) != (shift is None):
            raise GraphError(f"node {nn!r} (requantize): give both multiplier and shift or "
                             f"neither")
        if multiplier is not None:
            attrs.update(multiplier=int(multiplier), shift=int(shift))
        return self._node("requantize", [acc], [(f"{nn}.out", acc.shape, "int8",
                                                  Quant(float(out_scale)))], attrs, nn)[0]

    def relu(self, x, *, name: str | None = None) -> Value:
        """max(x, 0) on int8."""
        nn = name or self._new_name("relu")
        x = self._value(x, nn, "input")
        _want(nn, x, "int8", 2)
        return self._node("relu", [x], [(f"{nn}.out", x.shape, "int8", copy.copy(x.quant))],
                          {}, nn)[0]

    def add(self, a, b, *, name: str | None = None) -> Value:
        """int8 ``a + b`` (VXM ADD: wraps on overflow) of two tensors of one shape and scale."""
        nn = name or self._new_name("add")
        a, b = self._value(a, nn, "input"), self._value(b, nn, "input")
        _want(nn, a, "int8", 2)
        _want(nn, b, "int8", 2)
        _same_shape(nn, "add", a, b)
        sa, sb = a.quant.scales(), b.quant.scales()
        if sa.size != 1 or sb.size != 1 or not np.isclose(sa[0], sb[0], rtol=1e-9):
            raise GraphError(f"node {nn!r} (add): operands must share one scale, got "
                             f"{a.quant.scale} ({a.name}) and {b.quant.scale} ({b.name})")
        return self._node("add", [a, b], [(f"{nn}.out", a.shape, "int8", copy.copy(a.quant))],
                          {}, nn)[0]

    def softmax(self, x, *, name: str | None = None) -> Value:
        """Row softmax of int8 ``x`` (its scale is the real unit) -> int8 ``round(127 p)``
        (scale 1/127)."""
        nn = name or self._new_name("softmax")
        x = self._value(x, nn, "input")
        _want(nn, x, "int8", 2)
        sx = x.quant.scales()
        if sx.size != 1:
            raise GraphError(f"node {nn!r} (softmax): needs one scale, {x.name} is per-channel")
        return self._node("softmax", [x], [(f"{nn}.out", x.shape, "int8", Quant(1 / 127))],
                          {"scale": float(sx[0])}, nn)[0]

    def rescale(self, acc, out_scale: float, *, dtype: str = "int8",
                name: str | None = None) -> Value:
        """int32 -> ``dtype`` (int8, int16 or int32) of real unit ``out_scale``: ``saturate(
        round_half_up(acc * mult[c] / 2**shift))`` with one multiplier per channel of a
        per-channel accumulator and one shift for all (chosen by the quantize pass)."""
        nn = name or self._new_name("rescale")
        acc = self._value(acc, nn, "input")
        _want(nn, acc, "int32", 2)
        if not (isinstance(out_scale, (int, float)) and out_scale > 0):
            raise GraphError(f"node {nn!r} (rescale): out_scale must be a positive number, "
                             f"not {out_scale!r}")
        if dtype not in DTYPE_RANGE:
            raise GraphError(f"node {nn!r} (rescale): dtype {dtype!r} is not one of "
                             f"{', '.join(DTYPE_RANGE)}")
        return self._node("rescale", [acc], [(f"{nn}.out", acc.shape, dtype,
                                               Quant(float(out_scale)))],
                          {"out_scale": float(out_scale), "dtype": dtype}, nn)[0]

    def linear(self, x, w, bias=None, *, out_scale: float, relu: bool = False,
               out_dtype: str = "int8", transpose_b: bool = False,
               name: str | None = None) -> Value:
        """``x @ w [+ bias]`` brought to ``out_scale`` [then relu]. Builds matmul, bias_add and
        requantize (+ relu) nodes for an int8 output of one scale and no bias, else matmul,
        bias_add and :meth:`rescale` nodes (int8, int16 or int32 ``out_dtype``, per-channel
        weight scales; no relu); the tidy pass fuses either chain into one qlinear."""
        base = name or self._new_name("linear")
        wv = self._value(w, base, "weight")
        epi = bias is not None or out_dtype != "int8" or wv.quant.axis is not None
        if epi and relu:
            raise GraphError(f"node {base!r} (linear): relu is not available with a bias, "
                             f"per-channel weight scales or a {out_dtype} output (the rescale "
                             f"epilogue has no ReLU)")
        if epi and transpose_b:
            raise GraphError(f"node {base!r} (linear): a bias, per-channel scales or a "
                             f"{out_dtype} output need constant weights (transpose_b=False)")
        y = self.matmul(x, w, transpose_b=transpose_b, name=f"{base}.matmul")
        if bias is not None:
            y = self.bias_add(y, bias, name=f"{base}.bias")
        if epi:
            return self.rescale(y, out_scale, dtype=out_dtype, name=f"{base}.rescale")
        y = self.requantize(y, out_scale, name=f"{base}.requantize")
        if relu:
            y = self.relu(y, name=f"{base}.relu")
        return y

    def rmsnorm(self, x, gamma, *, eps: float, out_scale: float,
                name: str | None = None) -> Value:
        """RMSNorm over each row of int8 ``x`` (one scale, the real unit): ``x / sqrt(mean(x^2)
        + eps) * gamma`` (``gamma``: one real value per column) -> int8 of unit ``out_scale``
        (the chip's algorithm, ``reference.rmsnorm_int``)."""
        nn = name or self._new_name("rmsnorm")
        x = self._value(x, nn, "input")
        _want(nn, x, "int8", 2)
        if x.quant.scales().size != 1:
            raise GraphError(f"node {nn!r} (rmsnorm): needs one scale, {x.name} is per-channel")
        g_ = np.asarray(gamma, dtype=np.float64).reshape(-1)
        if g_.size != x.shape[1] or not np.all(np.isfinite(g_)):
            raise GraphError(f"node {nn!r} (rmsnorm): gamma must be {x.shape[1]} finite values, "
                             f"not {g_.size}")
        for what, v in (("eps", eps), ("out_scale", out_scale)):
            if not (isinstance(v, (int, float)) and v > 0):
                raise GraphError(f"node {nn!r} (rmsnorm): {what} must be a positive number, "
                                 f"not {v!r}")
        return self._node("rmsnorm", [x], [(f"{nn}.out", x.shape, "int8",
                                             Quant(float(out_scale)))],
                          {"gamma": [float(v) for v in g_], "eps": float(eps),
                           "in_scale": float(x.quant.scales()[0]),
                           "out_scale": float(out_scale)}, nn)[0]

    def gelu(self, x, out_scale: float, *, out_dtype: str = "int8",
             name: str | None = None) -> Value:
        """GELU of an int16 ``x`` (one scale, the real unit) -> ``out_dtype`` (int8 or int16) of
        unit ``out_scale``: ``relu(x)`` minus ``c(|x|) = |x| Phi(-|x|)`` read from a 256-entry
        table (the chip's ``GATHER``; ``minilm_int.gelu_int``)."""
        nn = name or self._new_name("gelu")
        x = self._value(x, nn, "input")
        _want(nn, x, "int16", 2)
        if x.quant.scales().size != 1:
            raise GraphError(f"node {nn!r} (gelu): needs one scale, {x.name} is per-channel")
        if not (isinstance(out_scale, (int, float)) and out_scale > 0):
            raise GraphError(f"node {nn!r} (gelu): out_scale must be a positive number, "
                             f"not {out_scale!r}")
        if out_dtype not in ("int8", "int16"):
            raise GraphError(f"node {nn!r} (gelu): out_dtype must be int8 or int16, not "
                             f"{out_dtype!r}")
        return self._node("gelu", [x], [(f"{nn}.out", x.shape, out_dtype,
                                          Quant(float(out_scale)))],
                          {"out_scale": float(out_scale), "dtype": out_dtype}, nn)[0]

    def residual(self, a, x, *, name: str | None = None) -> Value:
        """Saturating add with scale alignment: an int32 ``a`` (the branch, its scale the
        result's unit) plus an int16 ``x`` (the skip input, any one scale) rescaled to ``a``'s
        unit, saturated to int16 (``minilm_int.residual_int``)."""
        nn = name or self._new_name("residual")
        a, x = self._value(a, nn, "input"), self._value(x, nn, "input")
        _want(nn, a, "int32", 2)
        _want(nn, x, "int16", 2)
        _same_shape(nn, "residual", a, x)
        for v in (a, x):
            if v.quant.scales().size != 1:
                raise GraphError(f"node {nn!r} (residual): needs one scale, {v.name} is "
                                 f"per-channel")
        return self._node("residual", [a, x], [(f"{nn}.out", a.shape, "int16",
                                                 Quant(float(a.quant.scales()[0])))], {}, nn)[0]

    def attention(self, q, k, v, *, heads: int, causal: bool = False, key_mask=None,
                  scale: float | None = None, name: str | None = None) -> Value:
        """Multi-head attention of int8 ``q`` (Lq, heads*d), ``k`` and ``v`` (Lk, heads*d):
        head ``h`` is columns ``h*d ..`` of each (split inside the op), its output columns
        ``h*d ..`` of the result (merged), int8 (Lq, heads*d) in ``v``'s unit. Scores are
        ``q k^T * scale`` (default ``scale_q scale_k / sqrt(d)``); ``causal``: query ``i`` sees
        keys ``j <= i + Lk - Lq``; ``key_mask`` (Lk values, 1 a real key, 0 padding) masks
        padding keys for every query (not together with ``causal``)."""
        nn = name or self._new_name("attention")
        q, k, v = (self._value(t, nn, w) for t, w in ((q, "q"), (k, "k"), (v, "v")))
        for t in (q, k, v):
            _want(nn, t, "int8", 2)
            if t.quant.scales().size != 1:
                raise GraphError(f"node {nn!r} (attention): needs one scale, {t.name} is "
                                 f"per-channel")
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 or \
                q.shape[1] % heads:
            raise GraphError(f"node {nn!r} (attention): heads={heads!r} does not divide the "
                             f"{q.shape[1]} columns of {q.name}")
        if k.shape != v.shape or k.shape[1] != q.shape[1]:
            raise GraphError(f"node {nn!r} (attention): q {q.shape}, k {k.shape} and v "
                             f"{v.shape} must share their columns and k, v their rows")
        d = q.shape[1] // heads
        attrs = {"heads": heads, "causal": bool(causal)}
        if key_mask is not None:
            m = np.asarray(key_mask)
            if m.shape != (k.shape[0],) or m.dtype.kind not in "iub" or \
                    not np.isin(m, (0, 1)).all():
                raise GraphError(f"node {nn!r} (attention): key_mask must be {k.shape[0]} "
                                 f"values 0 or 1")
            if causal:
                raise GraphError(f"node {nn!r} (attention): causal together with a key_mask "
                                 f"is not supported")
            attrs["key_mask"] = [int(x) for x in m]
        if scale is None:
            scale = float(q.quant.scales()[0] * k.quant.scales()[0] / np.sqrt(d))
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise GraphError(f"node {nn!r} (attention): scale must be a positive number, not "
                             f"{scale!r}")
        attrs["scale"] = float(scale)
        return self._node("attention", [q, k, v], [(f"{nn}.out", q.shape, "int8",
                                                     copy.copy(v.quant))], attrs, nn)[0]

    # -- views -----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"name": self.name, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "values": [v.to_json() for v in self.values.values()],
                "nodes": [n.to_json() for n in self.nodes]}

    def dump(self) -> str:
        """One line per input, constant and node (``out = op(in, ...) {attrs}``)."""
        lines = [f"graph {self.name}"]
        for n in self.inputs:
            v = self.values[n]
            lines.append(f"  input {n}: {v.dtype}{list(v.shape)} scale={_fmt(v.quant.scale)}")
        for v in self.values.values():
            if v.is_const:
                lines.append(f"  const {v.name}: {v.dtype}{list(v.shape)} "
                             f"scale={_fmt(v.quant.scale)}")
        for n in self.nodes:
            outs = ", ".join(f"{o}: {self.values[o].dtype}{list(self.values[o].shape)}"
                             for o in n.outputs)
            attrs = json.dumps(_jsonable(n.attrs), sort_keys=True) if n.attrs else ""
            lines.append(f"  {n.name}: {outs} = {n.op}({', '.join(n.inputs)}) {attrs}".rstrip())
        lines.append(f"  outputs: {', '.join(self.outputs)}")
        return "\n".join(lines) + "\n"


def _fmt(s):
    if isinstance(s, (list, tuple, np.ndarray)):
        return f"[{len(s)} per-channel]"
    return f"{float(s):.6g}"


def _same_shape(node, op, a: Value, b: Value):
    if a.shape != b.shape:
        raise GraphError(f"node {node!r} ({op}): shapes {a.shape} ({a.name}) and {b.shape} "
                         f"({b.name}) differ")


def _want(node, v: Value, dtype, ndim):
    if v.dtype != dtype or len(v.shape) != ndim:
        raise GraphError(f"node {node!r}: {v.name} is {v.dtype} {v.shape}, needs {dtype} "
                         f"{ndim}-D")


def _check_quant(name, q: Quant, shape):
    s = np.asarray(q.scale, dtype=np.float64).reshape(-1)
    if not s.size or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise GraphError(f"value {name!r}: scale must be positive and finite, not {q.scale!r}")
    if q.axis is not None:
        if not 0 <= q.axis < len(shape) or s.size not in (1, shape[q.axis]):
            raise GraphError(f"value {name!r}: per-channel axis {q.axis} with {s.size} scales "
                             f"does not fit shape {shape}")
    elif s.size != 1:
        raise GraphError(f"value {name!r}: {s.size} scales need a channel axis")
