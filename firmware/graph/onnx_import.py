"""ONNX import: a quantized ONNX model as a :class:`~.ir.Graph` (see docs/compiler.md, *ONNX
import*).

:func:`import_onnx_model` reads a model (a ``ModelProto`` or a file path, through the ``onnx``
package) and returns an :class:`OnnxImport`: the graph, and how the host converts the ONNX
inputs to the graph's int8 inputs and its outputs back (:meth:`OnnxImport.convert_inputs`,
:meth:`OnnxImport.convert_outputs`). :func:`import_onnx` returns only the graph.

Operators (2-D tensors; symmetric int8: every zero point that reaches the chip is 0):

* ``MatMulInteger(A, B, a_zp, b_zp)`` -> ``matmul`` (int32 out). A graph input A (int8 or
  uint8) is written as ``A - a_zp``; a constant B is stored as ``B - b_zp``; a graph-input B is
  written transposed, ``(B - b_zp)^T``, and read with ``transpose_b``. Each must fit int8 (a
  constant is checked here, an input when it is converted), else the error says so.
* ``QLinearMatMul`` -> ``matmul`` + ``requantize`` to ``y_scale`` (``y_zero_point`` must be 0:
  VREQ saturates to int8 before a zero point could be added).
* QDQ: ``DequantizeLinear`` of an int8 value or initializer, ``MatMul`` / ``Gemm`` (a constant
  B; ``transB``; bias ``C`` as an int32 ``bias_add`` of the accumulator's scale),
  ``QuantizeLinear`` -> ``requantize``; ``Relu`` between a matmul and its ``QuantizeLinear``
  (``Q(relu(x)) = relu(Q(x))`` with zero point 0) or on a dequantized int8 value; ``Add`` of two
  dequantized int8 values of one scale quantized again to that scale (VXM ``ADD``, which wraps
  where ONNX saturates); ``Softmax`` on the last axis of a dequantized int8 value, quantized to
  scale 1/127; a ``QuantizeLinear`` of a float graph input is done by the host (round half to
  even, saturate, as ONNX). ``Constant`` and ``Identity`` are followed.

Scales and zero points must be constants: initializers, ``Constant`` nodes, or graph inputs
bound by ``bindings={name: array}`` (the backend binds them from the values it is run with).

Anything else raises :class:`OnnxImportError` naming the node, its operator and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ir import Graph, GraphError

__all__ = ["OnnxImportError", "OnnxImport", "import_onnx", "import_onnx_model"]


class OnnxImportError(GraphError):
    """An ONNX model does not map onto the graph IR; the message names the node and operator."""


# handles: what an ONNX tensor name stands for during the import
@dataclass
class _Const:            # a constant array (initializer, Constant, bound input)
    data: np.ndarray


@dataclass
class _Int:              # an ONNX integer tensor = IR value + zp
    value: str
    zp: int
    onnx_dtype: str


@dataclass
class _Real:             # a float tensor = the real value of an IR value (its quant's scale)
    value: str
    relu: bool = False


@dataclass
class _RealConst:        # a float constant = scale * q (a DequantizeLinear of an initializer)
    q: np.ndarray
    scale: object
    axis: int | None = None


@dataclass
class InputSpec:
    """How an ONNX input becomes a graph input: ``int`` (``x - zero_point``, checked to fit
    int8) or ``quantize`` (float -> int8 ``saturate(round_half_even(x / scale))``), optionally
    transposed."""
    onnx_name: str
    graph_name: str
    kind: str
    scale: float = 1.0
    zero_point: int = 0
    transpose: bool = False


@dataclass
class OutputSpec:
    """How a graph output becomes an ONNX output: ``int`` (the integers in ``dtype``) or
    ``dequantize`` (``float32(scale) * q``)."""
    onnx_name: str
    graph_name: str
    kind: str
    dtype: str
    scale: float = 1.0


@dataclass
class OnnxImport:
    """The graph of an ONNX model and the host's conversions of its inputs and outputs."""
    graph: Graph
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def convert_inputs(self, feeds: dict) -> dict:
        """ONNX input arrays (by ONNX name) -> the graph's int8 inputs."""
        out = {}
        for s in self.inputs:
            if s.onnx_name not in feeds:
                raise OnnxImportError(f"input {s.onnx_name!r} is missing")
            x = np.asarray(feeds[s.onnx_name])
            if s.kind == "quantize":
                q = np.clip(np.rint(x.astype(np.float32) / np.float32(s.scale)), -128, 127)
            else:
                q = x.astype(np.int64) - int(s.zero_point)
                if q.size and (q.min() < -128 or q.max() > 127):
                    raise OnnxImportError(
                        f"input {s.onnx_name!r}: values minus the zero point {s.zero_point} "
                        f"span [{q.min()}, {q.max()}], outside int8 (the chip's operands are "
                        f"symmetric int8)")
            q = q.astype(np.int64)
            out[s.graph_name] = q.T.copy() if s.transpose else q
        return out

    def convert_outputs(self, outs: dict) -> dict:
        """The graph's outputs -> ONNX output arrays (by ONNX name)."""
        res = {}
        for s in self.outputs:
            q = np.asarray(outs[s.graph_name], dtype=np.int64)
            if s.kind == "dequantize":
                res[s.onnx_name] = (np.float32(s.scale) * q.astype(np.float32)).astype(s.dtype)
            else:
                res[s.onnx_name] = q.astype(s.dtype)
        return res


_ONNX_DT = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 10: "float16", 11: "float64"}


def import_onnx(model_or_path, params=None, *, bindings: dict | None = None) -> Graph:
    """The :class:`Graph` of an ONNX model (see :func:`import_onnx_model`)."""
    return import_onnx_model(model_or_path, params, bindings=bindings).graph


def import_onnx_model(model_or_path, params=None, *, bindings: dict | None = None
                      ) -> OnnxImport:
    """Map an ONNX model onto the graph IR (see the module docstring). ``params`` is accepted
    for symmetry with the compiler and not used (shapes are checked when compiling);
    ``bindings`` gives constant values to graph inputs (scales, zero points)."""
    import onnx
    from onnx import numpy_helper
    if isinstance(model_or_path, onnx.ModelProto):
        model = model_or_path
    else:
        try:
            model = onnx.load(str(model_or_path))
        except Exception as e:  # noqa: BLE001 (any load failure is the file's problem)
            raise OnnxImportError(f"{model_or_path}: not a readable ONNX model: {e}") from None
    gp = model.graph
    g = Graph(gp.name or "onnx")
    env: dict = {}
    for t in gp.initializer:
        env[t.name] = _Const(numpy_helper.to_array(t))
    bindings = dict(bindings or {})
    types = {}
    for vi in list(gp.input) + list(gp.output) + list(gp.value_info):
        tt = vi.type.tensor_type
        types[vi.name] = (_ONNX_DT.get(tt.elem_type, f"elem_type {tt.elem_type}"),
                          tuple(d.dim_value if d.HasField("dim_value") else None
                                for d in tt.shape.dim))
    graph_inputs = [i.name for i in gp.input if i.name not in env]
    for name in graph_inputs:
        if name in bindings:
            env[name] = _Const(np.asarray(bindings[name]))
    imp = OnnxImport(g)
    pending_inputs = {}            # onnx input name -> InputSpec once converted

    def shape2(name, node, what):
        shp = types.get(name, (None, None))[1]
        if shp is None or len(shp) != 2 or None in shp:
            fail(node, f"{what} {name!r} has shape {shp}; only static 2-D tensors are "
                       f"supported")
        return shp

    def graph_input(name, node, kind, *, scale=1.0, zp=0, transpose=False):
        spec = InputSpec(name, name if not transpose else f"{name}.T", kind, float(scale),
                         int(zp), transpose)
        old = pending_inputs.get(name)
        if old is not None:
            if (old.kind, old.scale, old.zero_point, old.transpose) != \
                    (spec.kind, spec.scale, spec.zero_point, spec.transpose):
                fail(node, f"input {name!r} is read by two nodes needing different "
                           f"conversions")
            return old.graph_name
        M, N = shape2(name, node, "input")
        g.input(spec.graph_name, (N, M) if transpose else (M, N), scale=float(scale))
        pending_inputs[name] = spec
        imp.inputs.append(spec)
        return spec.graph_name

    def fail(node, why):
        raise OnnxImportError(f"node {_label(gp, node)!r} ({node.op_type}): {why}")

    def const(node, name, what):
        h = env.get(name)
        if not isinstance(h, _Const):
            fail(node, f"{what} {name!r} must be a constant (an initializer, a Constant or a "
                       f"bound input)")
        return h.data

    def scalar(node, name, what, default=0):
        if name == "":
            return default
        a = const(node, name, what)
        if a.size != 1:
            fail(node, f"{what} {name!r} has {a.size} values; per-tensor (one value) only")
        return a.reshape(-1)[0].item()

    def int8_operand(node, name, zp, what, *, scale=1.0, allow_input_t=False):
        """IR value (or const data) for an integer operand ``name`` with zero point ``zp``:
        returns (kind, value-name-or-data)."""
        h = env.get(name)
        if isinstance(h, _Const):
            q = h.data.astype(np.int64) - int(zp)
            if q.ndim != 2:
                fail(node, f"{what} {name!r} has shape {h.data.shape}; only 2-D is supported")
            if q.size and (q.min() < -128 or q.max() > 127):
                fail(node, f"{what} {name!r} minus its zero point {zp} spans "
                           f"[{q.min()}, {q.max()}], outside int8 (symmetric int8 only)")
            return "const", q
        if isinstance(h, _Int):
            if int(zp) != h.zp:
                fail(node, f"{what} {name!r} has zero point {zp}, its producer {h.zp}")
            return "value", h.value
        if h is None and name in graph_inputs:
            dt = types.get(name, ("?",))[0]
            if dt not in ("int8", "uint8"):
                fail(node, f"{what} {name!r} is {dt}, needs int8 or uint8")
            return ("input_t" if allow_input_t else "value",
                    graph_input(name, node, "int", scale=scale, zp=zp, transpose=allow_input_t))
        fail(node, f"{what} {name!r} is not an integer tensor this import can read ({h})")

    def matmul_of(node, a, b, za, zb, a_scale=1.0, b_scale=1.0, op_scales=False):
        ka, av = int8_operand(node, a, za, "A", scale=a_scale)
        if ka != "value":
            fail(node, f"A {a!r} is a constant; the first operand must be an activation")
        if op_scales and \
                not np.isclose(g.values[av].quant.scales()[0], a_scale, rtol=1e-6):
            fail(node, f"a_scale {a_scale} differs from the scale {g.values[av].quant.scale} "
                       f"{a!r} was quantized to")
        kb, bv = int8_operand(node, b, zb, "B", allow_input_t=True)
        try:
            if kb == "const":
                w = g.const(g._new_name(f"{node.name or node.op_type}.B"), bv,
                            scale=float(b_scale))
                return g.matmul(av, w, name=g._new_name(node.name or node.op_type))
            if kb == "input_t":
                g.values[bv].quant.scale = float(b_scale)
                return g.matmul(av, bv, transpose_b=True,
                                name=g._new_name(node.name or node.op_type))
            fail(node, "B must be a constant or a graph input (an activation as the second "
                       "operand is only read transposed)")
        except OnnxImportError:
            raise
        except GraphError as e:
            fail(node, str(e))

    for node in gp.node:
        op, ins, outs = node.op_type, list(node.input), list(node.output)
        nn = node.name or f"{op}_{len(g.nodes)}"
        if node.domain not in ("", "ai.onnx"):
            fail(node, f"domain {node.domain!r} is not supported")
        try:
            if op == "Constant":
                env[outs[0]] = _Const(numpy_helper.to_array(node.attribute[0].t))
            elif op == "Identity":
                env[outs[0]] = env[ins[0]] if ins[0] in env else fail(node, "unknown input")
            elif op == "MatMulInteger":
                za = scalar(node, ins[2] if len(ins) > 2 else "", "a_zero_point")
                zb = scalar(node, ins[3] if len(ins) > 3 else "", "b_zero_point")
                y = matmul_of(node, ins[0], ins[1], za, zb)
                env[outs[0]] = _Int(y.name, 0, "int32")
            elif op == "QLinearMatMul":
                a_s = scalar(node, ins[1], "a_scale")
                za = scalar(node, ins[2], "a_zero_point")
                b_s = scalar(node, ins[4], "b_scale")
                zb = scalar(node, ins[5], "b_zero_point")
                y_s = scalar(node, ins[6], "y_scale")
                zy = scalar(node, ins[7], "y_zero_point")
                if zy != 0:
                    fail(node, f"y_zero_point is {zy}; only 0 is supported (VREQ saturates to "
                               f"int8, a zero point would be added after it)")
                ydt = str(const(node, ins[7], "y_zero_point").dtype)
                if ydt != "int8":
                    fail(node, f"the output is {ydt}; only int8 outputs are supported")
                acc = matmul_of(node, ins[0], ins[3], za, zb, a_s, b_s, op_scales=True)
                y = g.requantize(acc, float(np.float32(y_s)), name=g._new_name(f"{nn}.rq"))
                env[outs[0]] = _Int(y.name, 0, "int8")
            elif op == "DequantizeLinear":
                s = scalar(node, ins[1], "x_scale", None) if const(
                    node, ins[1], "x_scale").size == 1 else None
                zp = scalar(node, ins[2] if len(ins) > 2 else "", "x_zero_point")
                h = env.get(ins[0])
                if isinstance(h, _Const):
                    sc = const(node, ins[1], "x_scale")
                    axis = None
                    if sc.size != 1:
                        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                        sc = sc.astype(np.float64).tolist()
                    else:
                        sc = float(sc.reshape(-1)[0])
                    env[outs[0]] = _RealConst(h.data.astype(np.int64) - int(zp), sc, axis)
                    continue
                if s is None:
                    fail(node, "per-channel scales of an activation are not supported")
                _, v = int8_operand(node, ins[0], zp, "x", scale=s)
                val = g.values[v]
                if val.dtype != "int8" and v not in g.inputs:
                    fail(node, f"dequantizes {val.dtype} {v!r}; an int8 value is needed")
                if v in g.inputs:
                    val.quant.scale = float(s)
                elif not np.isclose(val.quant.scales()[0], s, rtol=1e-6):
                    fail(node, f"scale {s} differs from {v!r}'s {val.quant.scale}")
                env[outs[0]] = _Real(v)
            elif op in ("MatMul", "Gemm"):
                a, b = env.get(ins[0]), env.get(ins[1])
                attrs = {x.name: (x.f if x.type == 1 else x.i) for x in node.attribute}
                if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or \
                        attrs.get("beta", 1.0) != 1.0:
                    fail(node, "transA, alpha and beta other than defaults are not supported")
                if not isinstance(a, _Real) or a.relu:
                    fail(node, f"A {ins[0]!r} must be a DequantizeLinear of an int8 value")
                if not isinstance(b, _RealConst):
                    fail(node, f"B {ins[1]!r} must be a DequantizeLinear of an int8 "
                               f"initializer")
                wq, axis = b.q, b.axis
                if attrs.get("transB", 0):
                    wq = wq.T
                    axis = None if axis is None else 1 - axis
                if wq.size and (wq.min() < -128 or wq.max() > 127):
                    fail(node, f"B {ins[1]!r} is not int8 after its zero point")
                w = g.const(g._new_name(f"{nn}.B"), wq, scale=b.scale, axis=axis)
                acc = g.matmul(a.value, w, name=g._new_name(nn))
                if len(ins) > 2 and ins[2]:
                    acc = _bias(g, node, acc, env.get(ins[2]), nn, fail)
                env[outs[0]] = _Real(acc.name)
            elif op == "Add":
                a, b = env.get(ins[0]), env.get(ins[1])
                if isinstance(b, _Real) and isinstance(a, (_RealConst, _Const)):
                    a, b = b, a
                if isinstance(a, _Real) and isinstance(b, (_RealConst, _Const)) \
                        and g.values[a.value].dtype == "int32" and not a.relu:
                    env[outs[0]] = _Real(_bias(g, node, g.values[a.value], b, nn, fail).name)
                elif isinstance(a, _Real) and isinstance(b, _Real) and not (a.relu or b.relu):
                    y = g.add(a.value, b.value, name=g._new_name(nn))
                    env[outs[0]] = _Real(y.name)
                else:
                    fail(node, "adds only a bias to a matmul or two dequantized int8 values")
            elif op == "Relu":
                a = env.get(ins[0])
                if not isinstance(a, _Real):
                    fail(node, f"{ins[0]!r} is not a dequantized value or matmul result")
                if g.values[a.value].dtype == "int32":
                    env[outs[0]] = _Real(a.value, relu=True)
                else:
                    env[outs[0]] = _Real(g.relu(a.value, name=g._new_name(nn)).name)
            elif op == "Softmax":
                a = env.get(ins[0])
                axis = next((x.i for x in node.attribute if x.name == "axis"), -1)
                if axis not in (-1, 1):
                    fail(node, f"axis {axis}: only the last axis of a 2-D tensor")
                if not isinstance(a, _Real) or g.values[a.value].dtype != "int8" or a.relu:
                    fail(node, f"{ins[0]!r} must be a dequantized int8 value")
                env[outs[0]] = _Real(g.softmax(a.value, name=g._new_name(nn)).name)
            elif op == "QuantizeLinear":
                s = float(scalar(node, ins[1], "y_scale"))
                zp = scalar(node, ins[2] if len(ins) > 2 else "", "y_zero_point")
                zdt = (str(const(node, ins[2], "y_zero_point").dtype)
                       if len(ins) > 2 and ins[2] else "uint8")
                if zp != 0 or zdt != "int8":
                    fail(node, f"quantizes to {zdt} with zero point {zp}; only int8 with zero "
                               f"point 0")
                a = env.get(ins[0])
                if a is None and ins[0] in graph_inputs:
                    v = graph_input(ins[0], node, "quantize", scale=s)
                    env[outs[0]] = _Int(v, 0, "int8")
                    continue
                if not isinstance(a, _Real):
                    fail(node, f"{ins[0]!r} is not a float value this import computes")
                val = g.values[a.value]
                if val.dtype == "int32":
                    y = g.requantize(val, s, name=g._new_name(f"{nn}"))
                    if a.relu:
                        y = g.relu(y, name=g._new_name(f"{nn}.relu"))
                elif np.isclose(val.quant.scales()[0], s, rtol=1e-6) and not a.relu:
                    y = val
                else:
                    fail(node, f"requantizes an int8 value of scale {val.quant.scale} to {s}; "
                               f"only an int32 accumulator is requantized")
                env[outs[0]] = _Int(y.name, 0, "int8")
            else:
                fail(node, "operator not supported by the import")
        except OnnxImportError:
            raise
        except GraphError as e:
            fail(node, str(e))
    for o in gp.output:
        h = env.get(o.name)
        dt = types.get(o.name, ("float32",))[0]
        if isinstance(h, _Int):
            if h.onnx_dtype != dt and dt in ("int8", "int32"):
                raise OnnxImportError(f"output {o.name!r}: {dt}, computed as {h.onnx_dtype}")
            v = h.value
            spec = OutputSpec(o.name, v, "int", h.onnx_dtype)
        elif isinstance(h, _Real):
            if h.relu:
                raise OnnxImportError(f"output {o.name!r}: a Relu of an int32 accumulator "
                                      f"needs a QuantizeLinear after it")
            v = h.value
            spec = OutputSpec(o.name, v, "dequantize", dt if dt.startswith("float") else
                              "float32", float(g.values[v].quant.scales()[0]))
        else:
            raise OnnxImportError(f"output {o.name!r} is not computed by the graph")
        if v in g.inputs or g.values[v].is_const:
            raise OnnxImportError(f"output {o.name!r} is a graph input or constant")
        # the package's output takes the ONNX name where that is free
        spec.graph_name = g.output(v, o.name if o.name not in g.values else None).name
        imp.outputs.append(spec)
    return imp


def _label(gp, node) -> str:
    """A node's name, or ``#<index>`` for an unnamed node."""
    if node.name:
        return node.name
    return f"#{next(i for i, n in enumerate(gp.node) if n is node)}"


def _bias(g, node, acc, b, nn, fail):
    """``bias_add`` of a float bias (or a DequantizeLinear of an int32 one) as int32 of the
    accumulator's scale."""
    s = acc.quant.scales()
    if s.size != 1:
        fail(node, "a bias of a per-channel accumulator is not supported")
    if isinstance(b, _RealConst):
        real = np.asarray(b.q, dtype=np.float64) * np.asarray(b.scale, dtype=np.float64)
    elif isinstance(b, _Const):
        real = np.asarray(b.data, dtype=np.float64)
    else:
        fail(node, "the bias must be a constant")
    real = real.reshape(-1)
    if real.size != acc.shape[1]:
        fail(node, f"bias has {real.size} values, the matmul {acc.shape[1]} columns")
    q = np.rint(real / s[0]).astype(np.int64)
    if q.size and (q.min() < -(1 << 31) or q.max() >= (1 << 31)):
        fail(node, "the bias does not fit int32 at the accumulator's scale")
    bv = g.const(g._new_name(f"{nn}.bias"), q, dtype="int32", scale=float(s[0]))
    return g.bias_add(acc, bv, name=g._new_name(f"{nn}.bias_add"))
