"""The graph compiler: a fixed list of named passes from a :class:`Graph` to one
:class:`~openlpu.firmware.package.Package`.

======== ===================================================================== ===============
pass     what it does                                                          returns
======== ===================================================================== ===============
import   checks the graph (every operand defined, outputs computed, no cycle,  Graph
         every input used) and sorts the nodes topologically (stable: ties in
         insertion order), copying it
tidy     drops nodes no output depends on; fuses ``matmul [-> bias_add] ->     Graph
         requantize [-> relu]`` chains whose intermediates have one consumer
         and are no output into one ``qlinear`` (likewise ``matmul [->
         bias_add] -> rescale``)
quantize chooses every requantize's ``(multiplier, shift)`` from the scales    Graph
         (:func:`~openlpu.firmware.graph.quant.multiplier_for`), every rescale's,
         gelu's and residual's per-channel multipliers and common shift
         (:func:`~openlpu.firmware.graph.quant.rescale_for`, ``gelu_quant``);
         zero points 0
lower    one kernel per node (:class:`Kernel`: emitter and its arguments;     KernelPlan
         a linear feeding a softmax is computed transposed; a qlinear with a
         bias or a rescale is :func:`~openlpu.firmware.linear.emit_linear`,
         rmsnorm :func:`~openlpu.firmware.norm.emit_rmsnorm` (as softmax), gelu
         :func:`~openlpu.firmware.gelu.emit_gelu`, residual
         :func:`~openlpu.firmware.linear.emit_residual`, attention
         :func:`~openlpu.firmware.attention.emit_attention` (a linear feeding
         its v computed transposed); errors name a node no kernel implements
allocate tensor lifetimes: the kernel that writes each value, the last that    KernelPlan
         reads it; an intermediate's MEM is freed after its last reader
schedule places every kernel on one :class:`ChipState` in order, each from     Scheduled
         the end of the kernels that wrote its inputs, inputs read where the
         producer left them (``inputs=`` layouts, copied by
         :func:`~.kernels.emit_copy` where a kernel cannot read them);
         MEM words are taken from and returned to the state's allocator by
         the lifetimes (constants and inputs never in words written in the
         run)
emit     the state's Package: the graph's inputs and outputs only, constants   Package
         (weights) in its MEM image
======== ===================================================================== ===============

:func:`compile_graph` runs them in order; ``stop_after`` returns the representation of a
pass, ``dump`` receives each pass's text (a callable ``dump(pass_name, text)`` or a directory,
where ``NN_<pass>.txt`` and ``NN_<pass>.json`` are written). Everything is deterministic: the
same graph and parameters give the same bytes.

The intermediate graphs can be evaluated by the integer reference
(``verification/graph_ref.py``) and agree with it on every pass.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from openlpu.params import LpuParams

from ..attention import emit_attention
from ..chipstate import ChipState, Emitted
from ..compiler import emit_elementwise, emit_matmul
from ..gelu import emit_gelu
from ..linear import emit_linear, emit_residual
from ..norm import emit_rmsnorm, emit_softmax
from ..package import TensorDesc
from ..schedule import CompileError
from .ir import Graph, GraphError, Node, Quant
from .kernels import emit_copy
from .quant import DTYPE_CODE, gelu_quant, gelu_table, multiplier_for, rescale_for

__all__ = ["PASSES", "compile_graph", "Kernel", "KernelPlan", "Scheduled", "GraphCompileError"]


class GraphCompileError(CompileError):
    """A graph does not compile; the message names the node (or pass) that does not fit."""


# -- import ---------------------------------------------------------------------------------------
def import_graph(graph: Graph, params: LpuParams) -> Graph:
    """Check ``graph`` and return a copy with its nodes in topological order."""
    if not isinstance(graph, Graph):
        raise GraphError(f"import: expected a Graph, not {type(graph).__name__}")
    g = graph.copy()
    defined = set(g.inputs) | {v.name for v in g.values.values() if v.is_const}
    produced = {}
    for n in g.nodes:
        for o in n.outputs:
            if o in produced or o in defined:
                raise GraphError(f"node {n.name!r}: value {o!r} is defined twice")
            produced[o] = n
    for n in g.nodes:
        for i in n.inputs:
            if i not in defined and i not in produced:
                raise GraphError(f"node {n.name!r}: operand {i!r} is never defined")
    if not g.outputs:
        raise GraphError(f"graph {g.name!r} has no outputs (g.output(value))")
    # Kahn's algorithm, ties in insertion order
    order, done = [], set(defined)
    pending = list(g.nodes)
    while pending:
        ready = next((n for n in pending if all(i in done for i in n.inputs)), None)
        if ready is None:
            raise GraphError(f"graph {g.name!r}: nodes {', '.join(n.name for n in pending)} "
                             f"form a cycle")
        order.append(ready)
        pending.remove(ready)
        done.update(ready.outputs)
    g.nodes = order
    used = {i for n in g.nodes for i in n.inputs}
    for i in g.inputs:
        if i not in used:
            raise GraphError(f"graph {g.name!r}: input {i!r} is not used by any node")
    return g


# -- tidy -----------------------------------------------------------------------------------------
def tidy(g: Graph, params: LpuParams) -> Graph:
    """Drop dead nodes; fuse matmul chains into ``qlinear`` (see the module docstring)."""
    g = g.copy()
    live = set(g.outputs)
    keep = []
    for n in reversed(g.nodes):
        if any(o in live for o in n.outputs):
            keep.append(n)
            live.update(n.inputs)
    g.nodes = list(reversed(keep))
    cons = g.consumers()
    prod = g.producer()

    def sole(v, op):
        """The one node of ``op`` reading ``v`` when ``v`` is an intermediate, else None."""
        c = cons.get(v, [])
        if len(c) == 1 and c[0].op == op and v not in g.outputs:
            return c[0]
        return None
    fused, out_nodes = set(), []
    for n in g.nodes:
        if n.name in fused:
            continue
        if n.op != "matmul":
            out_nodes.append(n)
            continue
        chain, v = [n], n.outputs[0]
        bias = sole(v, "bias_add")
        if bias:
            chain.append(bias)
            v = bias.outputs[0]
        rq = sole(v, "requantize") or sole(v, "rescale")
        if rq is None:
            out_nodes.append(n)
            if bias:
                out_nodes.append(bias)
                fused.add(bias.name)
            continue
        chain.append(rq)
        v = rq.outputs[0]
        relu = sole(v, "relu") if rq.op == "requantize" else None
        if relu:
            chain.append(relu)
            v = relu.outputs[0]
        inputs = list(n.inputs) + ([bias.inputs[1]] if bias else [])
        attrs = {k: rq.attrs[k] for k in ("out_scale", "multiplier", "shift", "dtype", "mult")
                 if k in rq.attrs}
        if rq.op == "rescale":
            attrs["epilogue"] = "rescale"
        attrs.update(relu=bool(relu), bias=bool(bias),
                     transpose_b=bool(n.attrs.get("transpose_b")),
                     acc_scale=g.values[n.outputs[0]].quant.to_json()["scale"])
        name = n.name[:-len(".matmul")] if n.name.endswith(".matmul") else n.name
        out_nodes.append(Node(name, "qlinear", inputs, [v], attrs))
        for c in chain:
            fused.add(c.name)
            for o in c.outputs:
                if o != v:
                    g.values.pop(o, None)
    g.nodes = out_nodes
    used = {i for n in g.nodes for i in n.inputs} | set(g.outputs) | set(g.inputs)
    produced = {o for n in g.nodes for o in n.outputs}
    g.values = {k: v for k, v in g.values.items() if k in used or k in produced}
    return g


# -- quantize -------------------------------------------------------------------------------------
def quantize(g: Graph, params: LpuParams) -> Graph:
    """Set ``multiplier`` and ``shift`` of every requantize and qlinear (one int per output
    column when the scales are per-channel and differ)."""
    g = g.copy()
    for n in g.nodes:
        for v in n.inputs + n.outputs:
            if g.values[v].quant.zero_point:
                raise GraphError(f"node {n.name!r}: {v} has zero point "
                                 f"{g.values[v].quant.zero_point}; only symmetric (0) is "
                                 f"compiled")
        try:
            if n.op == "gelu" and "idx_mult" not in n.attrs:
                n.attrs.update(_gelu_attrs(g, n))
            if n.op == "residual" and "mult" not in n.attrs:
                rq = residual_rescale(g, n)
                n.attrs.update(mult=int(rq.mult[0]), shift=int(rq.shift))
            if (n.op == "rescale" or n.attrs.get("epilogue") == "rescale") and \
                    "mult" not in n.attrs:
                rq = node_rescale(g, n)
                n.attrs.update(mult=[int(m) for m in rq.mult], shift=int(rq.shift))
        except ValueError as e:
            raise GraphError(str(e)) from None
        if n.op not in ("requantize", "qlinear") or "multiplier" in n.attrs or \
                n.attrs.get("epilogue") == "rescale":
            continue
        if n.op == "qlinear":
            acc = np.asarray(n.attrs["acc_scale"], dtype=np.float64).reshape(-1)
        else:
            acc = g.values[n.inputs[0]].quant.scales()
        try:
            pairs = [multiplier_for(float(s) / n.attrs["out_scale"], f"node {n.name!r}")
                     for s in acc]
        except ValueError as e:
            raise GraphError(str(e)) from None
        if len(set(pairs)) == 1:
            n.attrs["multiplier"], n.attrs["shift"] = pairs[0]
        else:
            n.attrs["multiplier"] = [m for m, _ in pairs]
            n.attrs["shift"] = [s for _, s in pairs]
    return g


def _acc_scales(g: Graph, n: Node) -> np.ndarray:
    if n.op == "qlinear":
        return np.asarray(n.attrs["acc_scale"], dtype=np.float64).reshape(-1)
    return g.values[n.inputs[0]].quant.scales()


def node_rescale(g: Graph, n: Node):
    """The ``Rescale`` of a rescale node or a qlinear with the rescale epilogue: the
    accumulator's scale(s) over ``out_scale``, one shift (:func:`~.quant.rescale_for`)."""
    return rescale_for(_acc_scales(g, n) / n.attrs["out_scale"], n.attrs["dtype"],
                       f"node {n.name!r}")


def residual_rescale(g: Graph, n: Node):
    """The ``Rescale`` of a residual's skip input into the branch's unit (int32)."""
    sa = g.values[n.inputs[0]].quant.scales()[0]
    sx = g.values[n.inputs[1]].quant.scales()[0]
    return rescale_for(sx / sa, "int32", f"node {n.name!r}")


def node_gelu_quant(g: Graph, n: Node):
    """The ``GeluQuant`` of a gelu node from its input's scale and ``out_scale``."""
    return gelu_quant(float(g.values[n.inputs[0]].quant.scales()[0]), n.attrs["out_scale"],
                      n.attrs["dtype"], f"node {n.name!r}")


def _gelu_attrs(g: Graph, n: Node) -> dict:
    q = node_gelu_quant(g, n)
    return {"idx_mult": int(q.idx.mult[0]), "idx_shift": int(q.idx.shift),
            "c_mult": int(q.c_to_x.mult[0]), "c_shift": int(q.c_to_x.shift),
            "out_mult": [int(m) for m in np.broadcast_to(q.out.mult, (1,))],
            "out_shift": int(q.out.shift)}


# -- lower ----------------------------------------------------------------------------------------
@dataclass
class Kernel:
    """One emitter call: ``kind`` (``matmul``, ``linear``, ``elementwise``, ``softmax``,
    ``rmsnorm``, ``gelu``, ``residual``, ``attention``), the node it implements, the value names
    it reads and writes and the emitter's arguments."""
    name: str
    kind: str
    inputs: list
    outputs: list
    args: dict

    def to_json(self):
        return {"name": self.name, "kind": self.kind, "inputs": self.inputs,
                "outputs": self.outputs, "args": self.args}


@dataclass
class KernelPlan:
    """The kernels of a graph in order, and (after ``allocate``) the tensor lifetimes."""
    graph: Graph
    kernels: list
    lifetimes: dict = field(default_factory=dict)   # value -> [writer index, last reader index]
    frees: dict = field(default_factory=dict)       # kernel index -> values freed after it

    def to_json(self):
        return {"graph": self.graph.name, "kernels": [k.to_json() for k in self.kernels],
                "lifetimes": self.lifetimes,
                "frees": {str(k): v for k, v in sorted(self.frees.items())}}

    def dump(self) -> str:
        lines = [f"kernels of {self.graph.name}"]
        for i, k in enumerate(self.kernels):
            args = json.dumps(k.args, sort_keys=True)
            lines.append(f"  [{i}] {k.name}: {k.kind}({', '.join(k.inputs)}) -> "
                         f"{', '.join(k.outputs)} {args}")
            if i in self.frees:
                lines.append(f"      frees {', '.join(self.frees[i])}")
        for v, (w, r) in sorted(self.lifetimes.items()):
            lines.append(f"  lifetime {v}: written by [{w}], last read by [{r}]")
        return "\n".join(lines) + "\n"


def lower(g: Graph, params: LpuParams) -> KernelPlan:
    """One :class:`Kernel` per node; raises :class:`GraphCompileError` naming a node no kernel
    implements (yet)."""
    ks = []
    for n in g.nodes:
        ins = [g.values[i] for i in n.inputs]
        if n.op in ("qlinear", "matmul"):
            x, w = ins[0], ins[1]
            tb = bool(n.attrs.get("transpose_b"))
            if w.is_const == tb:
                raise GraphCompileError(
                    f"node {n.name!r}: " + (f"{w.name} must be a constant (an activation is "
                                            f"read as the second operand only transposed, "
                                            f"transpose_b=True)" if not tb else
                                            f"a constant second operand is given untransposed "
                                            f"(transpose_b=False)"))
            M, K = x.shape
            N = w.shape[0] if tb else w.shape[1]
            args = {"M": M, "K": K, "N": N, "requantize": None, "relu": False,
                    "transpose_b": tb}
            epi = n.op == "qlinear" and (n.attrs.get("epilogue") == "rescale" or
                                         (n.attrs.get("bias") and not n.attrs.get("relu")
                                          and not isinstance(n.attrs["multiplier"], list)))
            if epi:
                # emit_linear: int32 bias and per-channel rescale (a requantize's (m, s) is
                # the rescale (m, 31 + s) into int8)
                if n.attrs.get("epilogue") == "rescale":
                    mult, shift = list(n.attrs["mult"]), int(n.attrs["shift"])
                    dt = DTYPE_CODE[n.attrs["dtype"]]
                else:
                    mult, shift, dt = [int(n.attrs["multiplier"])], 31 + int(n.attrs["shift"]), 0
                ins_ = list(n.inputs[:2]) + ([n.inputs[2]] if n.attrs.get("bias") else [])
                ks.append(Kernel(n.name, "linear", ins_, list(n.outputs),
                                 {"M": M, "K": K, "N": N, "mult": mult, "shift": shift,
                                  "out_dtype": dt}))
                continue
            if n.op == "qlinear":
                if n.attrs.get("bias"):
                    raise GraphCompileError(f"node {n.name!r}: a bias with a ReLU or with "
                                            f"per-channel requantize multipliers is not "
                                            f"lowered (g.linear(..., out_dtype=...) without "
                                            f"relu takes the rescale epilogue)")
                m, s = n.attrs["multiplier"], n.attrs["shift"]
                if isinstance(m, list):
                    raise GraphCompileError(f"node {n.name!r}: per-channel requantize "
                                            f"multipliers are not lowered yet (the epilogue "
                                            f"takes one multiplier)")
                args.update(requantize=[int(m), int(s)], relu=bool(n.attrs["relu"]))
            ks.append(Kernel(n.name, "matmul", list(n.inputs[:2]), list(n.outputs), args))
        elif n.op in ("softmax", "rmsnorm"):
            x = ins[0]
            rows, cols = x.shape
            prod = next((k for k in ks if x.name in k.outputs), None)
            if prod is not None:
                # the kernel reads X column-wise: its producer computes X^T = W^T @ x^T
                # (weights as A, x's rows as the B^T words), which stores X column-wise
                if prod.kind != "matmul" or not prod.args["requantize"]:
                    raise GraphCompileError(
                        f"node {n.name!r} ({n.op}): reads its input column-wise; {x.name} "
                        f"(from {prod.name!r}) is stored row-wise and a transpose is not "
                        f"lowered yet (a {n.op} may follow a linear without bias directly)")
                prod.args["transposed"] = True
            if n.op == "softmax":
                args = {"rows": rows, "cols": cols, "scale": n.attrs["scale"]}
            else:
                args = {"rows": rows, "cols": cols, **{k: n.attrs[k] for k in
                                                       ("gamma", "eps", "in_scale", "out_scale")}}
            ks.append(Kernel(n.name, n.op, [x.name], list(n.outputs), args))
        elif n.op == "attention":
            q, k_, v = ins
            H = n.attrs["heads"]
            Lq, Lk, d = q.shape[0], k_.shape[0], q.shape[1] // H
            vl = params.vl
            if H > 1 and (d != vl or Lq > vl or Lk > vl):
                raise GraphCompileError(
                    f"node {n.name!r} (attention): {H} heads of dimension {d} over {Lq} queries "
                    f"and {Lk} keys; the head split in place needs head_dim == VL ({vl}) and "
                    f"at most VL queries and keys (one column tile per head)")
            for t in (q, k_):
                pq = next((kk for kk in ks if t.name in kk.outputs), None)
                if pq is not None and pq.args.get("transposed"):
                    raise GraphCompileError(f"node {n.name!r} (attention): {t.name} is also "
                                            f"read transposed")
                if pq is not None and d % vl:
                    # the kernel sums q.k over all VL lanes; a matmul's result lanes beyond
                    # its N columns are not zero (they hold what the weight buffer held)
                    raise GraphCompileError(
                        f"node {n.name!r} (attention): {t.name} is computed with head_dim "
                        f"{d}, not a multiple of VL ({vl}); the lanes beyond it would not "
                        f"be zero")
            pv = next((kk for kk in ks if v.name in kk.outputs), None)
            if pv is not None and Lk % vl:
                raise GraphCompileError(
                    f"node {n.name!r} (attention): {v.name} is computed (stored transposed, "
                    f"lanes = keys) for {Lk} keys, not a multiple of VL ({vl}); the lanes "
                    f"beyond them would not be zero (pad the sequence, with key_mask)")
            if pv is not None:
                # the kernel reads V^T: its producer computes v^T = W^T @ x^T (as for softmax)
                if pv.kind != "matmul" or not pv.args["requantize"] or pv.args["transpose_b"]:
                    raise GraphCompileError(
                        f"node {n.name!r} (attention): reads v transposed; {v.name} (from "
                        f"{pv.name!r}) is stored row-wise and only a linear without bias "
                        f"(requantize epilogue, constant weights) is computed transposed")
                pv.args["transposed"] = True
            args = {"seq_q": Lq, "seq_k": Lk, "head_dim": d, "heads": H,
                    "causal": n.attrs["causal"], "scale": n.attrs["scale"]}
            if "key_mask" in n.attrs:
                args["key_mask"] = list(n.attrs["key_mask"])
            ks.append(Kernel(n.name, "attention", list(n.inputs), list(n.outputs), args))
        elif n.op == "gelu":
            R, C = ins[0].shape
            a = n.attrs
            ks.append(Kernel(n.name, "gelu", list(n.inputs), list(n.outputs),
                             {"R": R, "C": C, "idx_mult": a["idx_mult"],
                              "idx_shift": a["idx_shift"], "c_mult": a["c_mult"],
                              "c_shift": a["c_shift"], "out_mult": a["out_mult"],
                              "out_shift": a["out_shift"], "out_dtype": DTYPE_CODE[a["dtype"]]}))
        elif n.op == "residual":
            R, C = ins[0].shape
            ks.append(Kernel(n.name, "residual", list(n.inputs), list(n.outputs),
                             {"R": R, "C": C, "mult": n.attrs["mult"],
                              "shift": n.attrs["shift"]}))
        elif n.op in ("add", "relu"):
            R, C = ins[0].shape
            ks.append(Kernel(n.name, "elementwise", list(n.inputs), list(n.outputs),
                             {"op": n.op.upper(), "R": R, "C": C}))
        else:
            why = {"requantize": "a requantize must follow a matmul directly (the fused "
                                 "epilogue); an int32 tensor in MEM is not requantized",
                   "bias_add": "a bias_add must be between a matmul and a requantize or "
                               "rescale",
                   "rescale": "a rescale must follow a matmul (or its bias_add) directly "
                              "(the linear epilogue)",
                   }.get(n.op, "no kernel implements it yet")
            raise GraphCompileError(f"node {n.name!r} ({n.op}): {why}")
    return KernelPlan(g, ks)


# -- allocate -------------------------------------------------------------------------------------
def allocate(plan: KernelPlan, params: LpuParams) -> KernelPlan:
    """Lifetimes: which kernel writes each value and which reads it last; an intermediate (not
    a graph input, output or constant) is freed after its last reader."""
    g = plan.graph
    life = {}
    for i, k in enumerate(plan.kernels):
        for v in k.outputs:
            life[v] = [i, i]
        for v in k.inputs:
            life.setdefault(v, [-1, -1])[1] = i
    frees = {}
    for v, (w, r) in life.items():
        val = g.values[v]
        if v in g.inputs or v in g.outputs or val.is_const:
            continue
        frees.setdefault(r, []).append(v)
    return KernelPlan(g, plan.kernels, life, {k: sorted(v) for k, v in frees.items()})


# -- schedule -------------------------------------------------------------------------------------
@dataclass
class Scheduled:
    """The chip state with every kernel placed, each value's layout and each kernel's
    ``[earliest, end)`` cycles."""
    plan: KernelPlan
    state: ChipState
    layouts: dict
    cycles: list

    def to_json(self):
        return {"kernels": [{"name": k.name, "earliest": a, "end": b}
                            for k, (a, b) in zip(self.plan.kernels, self.cycles)],
                "layouts": {n: d.to_dict() for n, d in sorted(self.layouts.items())},
                "end": self.state.end}

    def dump(self) -> str:
        lines = [f"schedule of {self.plan.graph.name}: {self.state.end} cycles"]
        for k, (a, b) in zip(self.plan.kernels, self.cycles):
            lines.append(f"  {k.name}: cycles {a}..{b - 1}")
        for n, d in sorted(self.layouts.items()):
            lines.append(f"  {n}: {d.dtype}{list(d.shape)}{' transposed' if d.transposed else ''}"
                         f" planes {json.dumps(d.to_dict()['planes'])} base {d.base}")
        return "\n".join(lines) + "\n"


def _image_of(params, desc, data) -> list:
    """MEM image entries ``(slice, address, VL bytes)`` holding ``data`` in ``desc``'s layout."""
    vl = params.vl
    s = np.asarray(data, dtype=np.int64)
    s = s.T if desc.transposed else s
    r, c = s.shape
    tiles = desc.tiles(vl)
    st = np.zeros((r, tiles * vl), dtype=np.int64)
    st[:, :c] = s
    nbytes = len(desc.planes)
    u = st & ((1 << (8 * nbytes)) - 1)
    out = []
    for b in range(nbytes):
        plane = ((u >> (8 * b)) & 0xFF).astype(np.uint8)
        for j in range(tiles):
            for row in range(r):
                sl, bank, word = desc.locate(b, j * r + row)
                out.append((sl, bank * params.mem_words + word,
                            bytes(plane[row, j * vl:(j + 1) * vl])))
    return out


def _owners(state, name) -> list:
    """Allocator owner names of a tensor (``name`` or its byte planes)."""
    return [o for o in state.alloc._owned if o == name or o.startswith(f"{name} byte plane ")]


def schedule(plan: KernelPlan, params: LpuParams) -> Scheduled:
    """Emit every kernel on one :class:`ChipState`, in order (see the module docstring)."""
    g = plan.graph
    state = ChipState(params, f"graph {g.name!r} on preset {params.name!r}")
    layouts, ends, cycles = {}, {}, []
    pending = []                                    # (cycle from which free, value)
    dirty = {}                                      # (slice, bank) -> words freed in the run
    fixed = {}                                      # kernel index -> placeholder owners
    for i, k in enumerate(plan.kernels):
        if k.kind in ("softmax", "rmsnorm", "attention"):
            if any(fixed):
                raise GraphCompileError(f"node {k.name!r} ({k.kind}): one softmax, rmsnorm or "
                                        f"attention per program (their MEM words are fixed)")
            # a kernel with fixed MEM words: hold them from the start, so that the kernels
            # before it leave them free, and let them go just before it
            dry = ChipState(params)
            try:
                if k.kind == "softmax":
                    emit_softmax(dry, k.args["rows"], k.args["cols"], scale=k.args["scale"])
                elif k.kind == "rmsnorm":
                    _emit_rmsnorm(dry, k.args)
                else:
                    _emit_attention(dry, k.args)
            except CompileError as e:
                raise GraphCompileError(f"node {k.name!r} ({k.kind}): {e}") from None
            fixed[i] = []
            for owner, ranges in sorted(dry.alloc._owned.items()):
                for n_, (sl, bk, s0, e0) in enumerate(ranges):
                    ph = f"{k.name}: fixed words of {owner} {n_}"
                    state.alloc.reserve(ph, (sl, bk), s0, e0 - s0)
                    fixed[i].append(ph)
    for i, k in enumerate(plan.kernels):
        earliest = max([ends.get(v, 0) for v in k.inputs], default=0)
        for ph in fixed.get(i, ()):
            state.alloc.free(ph)
        # an intermediate's words return to the allocator once its last reader has ended
        for t, v in [x for x in pending if x[0] <= earliest]:
            for o in _owners(state, v):
                for sl, bk, s0, e0 in state.alloc._owned[o]:
                    dirty.setdefault((sl, bk), set()).update(range(s0, e0))
                state.alloc.free(o)
            pending.remove((t, v))
        saved = state.fork()
        try:
            out, earliest = _emit_somewhere(state, g, k, layouts, earliest)
            if _preloaded(state, g, k, out, saved) & _dirty_words(dirty):
                # constants and inputs are in MEM before the run: words an intermediate
                # was written to in the run cannot hold them; emit again with those held
                state.adopt(saved)
                held = _hold_dirty(state, dirty, k.name)
                out, earliest = _emit_somewhere(state, g, k, layouts, earliest)
                for ph in held:
                    state.alloc.free(ph)
        except CompileError as e:
            raise GraphCompileError(f"node {k.name!r} ({k.kind}): {e}") from None
        flip = k.args.get("transposed")
        tb = k.kind == "matmul" and k.args.get("transpose_b")
        for j, d in enumerate(out.inputs):
            # the emitter's descriptors of A and B^T, as the graph's values
            if (j == 0 and flip and not tb) or (j == 1 and (flip or tb)):
                d = _flip(d)
            if d.name in k.inputs and d.name not in layouts:
                layouts[d.name] = d
                if g.values[d.name].is_const:
                    state.image.extend(_image_of(params, d, g.values[d.name].data))
        for d in out.outputs:
            d = _flip(d) if flip else d
            layouts[d.name] = d
            ends[d.name] = out.end
        cycles.append((earliest, out.end))
        for v in plan.frees.get(i, ()):
            pending.append((out.end, v))
        if k.kind == "linear":
            # emit_linear's int32 accumulator is read by its own epilogue only
            pending.append((out.end, f"{k.outputs[0]} accumulator"))
    return Scheduled(plan, state, layouts, cycles)


def _emit_somewhere(state, g, k, layouts, earliest):
    """Emit ``k`` from ``earliest``, or, if it does not fit next to the kernels still running
    (a queue, stream or bank they use), after all of them; returns (Emitted, its earliest)."""
    try:
        return _emit(state, g, k, layouts, earliest), earliest
    except CompileError:
        if state.end <= earliest:
            raise
        t = state.end           # (read before the emission moves it)
        return _emit(state, g, k, layouts, t), t


def _preloaded(state, g, k, out, before) -> set:
    """MEM words ``(slice, bank, word)`` the emission of ``k`` filled before the run: new MEM
    image entries and newly placed graph inputs and constants."""
    p = state.params
    words = {(sl, p.mem_bank_of(a), a % p.mem_words) for sl, a, _ in state.image[
        len(before.image):]}
    for d in out.inputs:
        v = g.values.get(d.name)
        if v is not None and (v.is_const or d.name in g.inputs):
            for b in range(len(d.planes)):
                words.update(d.plane_words(b, p.vl))
    return words


def _dirty_words(dirty) -> set:
    return {(sl, bk, w) for (sl, bk), ws in dirty.items() for w in ws}


def _hold_dirty(state, dirty, who) -> list:
    """Reserve every free word in ``dirty``; returns the placeholder owners."""
    held = []
    for (sl, bk), ws in sorted(dirty.items()):
        for s0, e0 in list(state.alloc._free[(sl, bk)]):
            run = [w for w in range(s0, e0) if w in ws]
            i = 0
            while i < len(run):
                j = i
                while j + 1 < len(run) and run[j + 1] == run[j] + 1:
                    j += 1
                ph = f"{who}: words written in the run ({sl}, {bk}, {run[i]})"
                state.alloc.reserve(ph, (sl, bk), run[i], run[j] - run[i] + 1)
                held.append(ph)
                i = j + 1
    return held


def _apart(state, a, b, who, earliest):
    """``b``, or a copy of it in other MEM slices when ``a`` and ``b`` (layouts another kernel
    wrote) share a slice: one read queue cannot feed both operands in one cycle. Returns
    (layout, earliest after the copy)."""
    if a is None or b is None:
        return b, earliest
    sa = {sl for sl, *_ in a.layout[0]}
    if not sa & {sl for sl, *_ in b.layout[0]}:
        return b, earliest
    cp = emit_copy(state, b, f"{b.name}@{who}", earliest=earliest, avoid_slices=sa)
    return cp.outputs[0], cp.end


def _flip(d):
    """The same stored words described as the transpose (``x^T`` stored row-wise is ``x``
    stored column-wise)."""
    return TensorDesc(d.name, tuple(reversed(d.shape)), d.dtype, d.planes, base=d.base,
                      transposed=not d.transposed)


def _emit_rmsnorm(state, a, earliest=0, names=("X", "Y"), inputs=None):
    return emit_rmsnorm(state, a["rows"], a["cols"], gamma=np.asarray(a["gamma"]), eps=a["eps"],
                        in_scale=a["in_scale"], out_scale=a["out_scale"], earliest=earliest,
                        names=names, inputs=inputs)


def _emit_attention(state, a, earliest=0, inputs=None):
    return emit_attention(state, a["seq_q"], a["seq_k"], a["head_dim"], heads=a["heads"],
                          scale=a["scale"], causal=a["causal"], key_mask=a.get("key_mask"),
                          earliest=earliest, inputs=inputs)


def _emit(state, g, k: Kernel, layouts, earliest):
    a = k.args
    if k.kind == "matmul" and a.get("transposed"):
        # out^T = w^T @ x^T: w^T as A (w's rows with transpose_b), x's rows as B^T's words
        x, w = k.inputs
        rq = tuple(a["requantize"])
        A = layouts.get(w) if a["transpose_b"] else None
        B, earliest = _apart(state, A, layouts.get(x), k.name, earliest)
        given = (A, _flip(B) if B is not None else None)
        return emit_matmul(state, a["N"], a["K"], a["M"], earliest=earliest, requantize=rq,
                           relu=a["relu"], names=(w, x, k.outputs[0]),
                           inputs=given if any(d is not None for d in given) else None)
    if k.kind in ("softmax", "rmsnorm"):
        (x,), y = k.inputs, k.outputs[0]
        w0 = state.params.slice("mem_w0").index
        given = layouts.get(x)
        if given is not None:
            if given.layout != [[(w0, 0, 0, 1)]]:
                cp = emit_copy(state, given, f"{x}@{k.name}", earliest=earliest,
                               unit=(w0, 0), base=0)
                given, earliest = cp.outputs[0], cp.end
        earliest = max(earliest, state.stream_hi + 1)
        if k.kind == "rmsnorm":
            return _emit_rmsnorm(state, a, earliest, (x, y),
                                 (given,) if given is not None else None)
        return emit_softmax(state, a["rows"], a["cols"], scale=a["scale"], earliest=earliest,
                            names=(x, y), inputs=(given,) if given is not None else None)
    if k.kind == "matmul":
        x, w = k.inputs
        if not a["transpose_b"] and w in layouts:
            raise CompileError(f"the weights {w} are read by two kernels; give each its own "
                               f"constant")
        rq = tuple(a["requantize"]) if a["requantize"] else None
        # a graph input first read here transposed is placed by the kernel (as B^T's rows)
        B = layouts.get(w) if a["transpose_b"] else None
        B, earliest = _apart(state, layouts.get(x), B, k.name, earliest)
        given = (layouts.get(x), _flip(B) if B is not None else None)
        return emit_matmul(state, a["M"], a["K"], a["N"], earliest=earliest, requantize=rq,
                           relu=a["relu"], names=(x, w, k.outputs[0]),
                           inputs=given if any(d is not None for d in given) else None)
    if k.kind == "linear":
        x, w = k.inputs[:2]
        if w in layouts:
            raise CompileError(f"the weights {w} are read by two kernels; give each its own "
                               f"constant")
        N = a["N"]
        bias = g.values[k.inputs[2]].data if len(k.inputs) > 2 else np.zeros(N, np.int64)
        gx = layouts.get(x)
        return emit_linear(state, a["M"], a["K"], N, bias=np.asarray(bias, dtype=np.int64),
                           mult=np.asarray(a["mult"], dtype=np.int64), shift=a["shift"],
                           out_dtype=a["out_dtype"], earliest=earliest,
                           names=(x, w, k.outputs[0]),
                           inputs=(gx,) if gx is not None else None)
    if k.kind == "attention":
        p = state.params
        if len(set(k.inputs)) != 3:
            raise CompileError("q, k and v must be three different values")
        w0, w1 = p.slice("mem_w0").index, p.slice("mem_w1").index
        given = []
        for v, unit, tr in zip(k.inputs, ((w1, 1), (w0, 0), (w1, 0)), (False, False, True)):
            d = layouts.get(v)
            if d is None:
                # a graph input: placed where the kernel reads it (the host writes it there)
                val = g.values[v]
                d = TensorDesc(v, val.shape, "int8", [unit], base=0, transposed=tr)
                state.alloc.reserve(v, unit, 0, d.words(p.vl))
            elif d.layout != [[(unit[0], unit[1], 0, 1)]] or bool(d.transposed) != tr:
                if bool(d.transposed) != tr:
                    raise CompileError(f"{v} is stored {'row-wise' if tr else 'transposed'}")
                cp = emit_copy(state, d, f"{v}@{k.name}", earliest=earliest, unit=unit, base=0)
                d, earliest = cp.outputs[0], cp.end
            given.append(d)
        earliest = max(earliest, state.stream_hi + 1)
        out = _emit_attention(state, a, earliest, tuple(given))
        H, d = a["heads"], a["head_dim"]
        o = TensorDesc(k.outputs[0], (a["seq_q"], H * d), "int8",
                       [(p.slice("mem_e0").index, 1)], base=0, transposed=True)
        ins = [TensorDesc(v, t.shape, t.dtype, t.planes, base=t.base, transposed=t.transposed)
               for v, t in zip(k.inputs, given)]
        return Emitted(end=out.end, inputs=ins, outputs=[o], meta=out.meta)
    if k.kind == "gelu":
        (x,), y = k.inputs, k.outputs[0]
        gx = layouts.get(x)
        return emit_gelu(state, a["R"], a["C"], table=gelu_table(),
                         idx_mult=a["idx_mult"], idx_shift=a["idx_shift"], c_mult=a["c_mult"],
                         c_shift=a["c_shift"], out_mult=np.asarray(a["out_mult"], np.int64),
                         out_shift=a["out_shift"], out_dtype=a["out_dtype"],
                         earliest=earliest, names=(x, y),
                         inputs=(gx,) if gx is not None else None)
    if k.kind == "residual":
        (va, vx), y = k.inputs, k.outputs[0]
        if va == vx:
            raise CompileError(f"both operands are {va}; not lowered")
        given = (layouts.get(va), layouts.get(vx))
        return emit_residual(state, a["R"], a["C"], mult=int(a["mult"]), shift=a["shift"],
                             earliest=earliest, names=(va, vx, y),
                             inputs=given if any(d is not None for d in given) else None)
    if k.kind == "elementwise":
        names = (k.inputs + [f"{k.outputs[0]}.unused"])[:2] + [k.outputs[0]]
        given = [layouts.get(v) for v in k.inputs]
        if len(k.inputs) == 2 and k.inputs[0] == k.inputs[1]:
            raise CompileError(f"both operands are {k.inputs[0]}; not lowered")
        if len(given) == 2:
            given[1], earliest = _apart(state, given[0], given[1], k.name, earliest)
        given = tuple(given)
        return emit_elementwise(state, a["op"], a["R"], a["C"], earliest=earliest,
                                names=tuple(names), inputs=given if any(given) else None)
    raise CompileError(f"unknown kernel kind {k.kind!r}")


# -- emit -----------------------------------------------------------------------------------------
def emit(s: Scheduled, params: LpuParams):
    """The :class:`Package` of the scheduled state: the graph's inputs and outputs."""
    g = s.plan.graph
    meta = {"graph": g.name, "kernels": [{"name": k.name, "kind": k.kind, "earliest": a,
                                          "end": b} for k, (a, b) in zip(s.plan.kernels,
                                                                          s.cycles)]}
    return s.state.package(name=g.name, inputs=[s.layouts[v] for v in g.inputs],
                           outputs=[s.layouts[v] for v in g.outputs], meta=meta)


#: The passes, in their fixed order: (name, function(representation, params) -> next).
PASSES = (("import", import_graph), ("tidy", tidy), ("quantize", quantize), ("lower", lower),
          ("allocate", allocate), ("schedule", schedule), ("emit", emit))
PASS_NAMES = tuple(n for n, _ in PASSES)


def _texts(rep):
    """(text, JSON) of a pass's representation."""
    from ..package import Package
    if isinstance(rep, Package):
        d = {"name": rep.name, "predicted_cycles": rep.predicted_cycles,
             "inputs": [t.to_dict() for t in rep.inputs],
             "outputs": [t.to_dict() for t in rep.outputs],
             "queues": {q: len(w) for q, w in sorted(rep.queues.items())}}
        text = (f"package {rep.name}: {rep.predicted_cycles} cycles, "
                f"{sum(len(w) for w in rep.queues.values())} instruction words, "
                f"{len(rep.mem_image)} constant MEM words\n")
        return text, d
    return rep.dump(), rep.to_json()


def compile_graph(graph: Graph, params: LpuParams, stop_after: str | None = None, dump=None):
    """Run the passes of :data:`PASSES` on ``graph`` for ``params``; returns the
    :class:`~openlpu.firmware.package.Package`, or with ``stop_after`` (a pass name) that
    pass's representation. ``dump``: a callable ``dump(pass_name, text)`` or a directory
    (``NN_<pass>.txt`` and ``.json`` written there). Raises :class:`GraphError` /
    :class:`GraphCompileError` naming the node that does not fit."""
    if stop_after is not None and stop_after not in PASS_NAMES:
        raise ValueError(f"stop_after={stop_after!r} is not a pass; passes: "
                         f"{', '.join(PASS_NAMES)}")
    if isinstance(dump, (str, os.PathLike)):
        os.makedirs(dump, exist_ok=True)
    rep = graph
    for i, (name, fn) in enumerate(PASSES):
        rep = fn(rep, params)
        if dump is not None:
            text, js = _texts(rep)
            if callable(dump):
                dump(name, text)
            else:
                base = os.path.join(os.fspath(dump), f"{i:02d}_{name}")
                with open(base + ".txt", "w") as f:
                    f.write(text)
                with open(base + ".json", "w") as f:
                    json.dump(js, f, indent=1, sort_keys=True)
        if name == stop_after:
            return rep
    return rep
