"""Compiler: workloads -> cycle-exact schedules -> program packages.

:func:`compile_matmul` builds ``C = A @ B`` for int8 ``A`` (M x K) and ``B`` (K x N) with int32
``C``, tiled over K and N in vector-length (VL) tiles and over M in accumulator-sized chunks.

Data placement (global MEM slice numbers, see ``LpuParams.mem_slice_list``):

* ``A`` rows in ``mem_w0`` bank 0, word ``j*M + m`` = row ``m``, K-tile ``j``;
* ``B^T`` rows in ``mem_w1`` bank 0, word ``j*N + n`` = column ``n`` of B, K-tile ``j``
  (the MXM takes the weights of one output lane per vector);
* ``C`` byte plane ``b`` in bank 1 of MEM slice ``b``, word ``j*M + m`` = row ``m``, N-tile ``j``.

Dataflow per tile: ``mem_w1`` READs weight vectors westward on stream 1 into ``LW``; ``IW`` swaps
them in (double-buffered, so the next tile's weights load while this tile computes); ``mem_w0``
READs activation rows westward on stream 0 into ``ABC`` (one per cycle); after the last K-tile,
``ACC`` sends each int32 row eastward on stream group 0, and four MEM slices ``WRITE`` the four
byte planes. Every consumer is issued at ``producer issue + d_func + |distance|`` (docs/architecture.md).
"""

from __future__ import annotations

import math

from openlpu import isa
from openlpu.isa import Dir
from openlpu.params import LpuParams

from .package import Package, TensorDesc
from .schedule import CompileError, Schedule
from .vxmconst import load_const

__all__ = ["compile_matmul", "CompileError"]

_STREAM_A = 0
_STREAM_B = 1
_GROUP_C = 0


def _check_dim(name, v):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise CompileError(f"matmul dimension {name} must be a positive integer, not {v!r}")


def compile_matmul(params: LpuParams, M: int, K: int, N: int, *, name: str | None = None,
                   requantize: tuple | None = None, relu: bool = False) -> Package:
    """Compile an int8 matmul ``(M x K) @ (K x N) -> int32 (M x N)`` for ``params``.

    With ``requantize=(multiplier, shift)`` the int32 rows stream from the MXM straight into the
    VXM, which requantizes them (``VREQ``: ``saturate8(round(c * multiplier / 2**(31 + shift)))``,
    multiplier in the ALU's constant register) and, with ``relu``, applies ``VRELU`` in a chained
    second ALU; the result ``C`` is int8 and never exists as int32 in MEM.

    Raises :class:`CompileError` if a dimension is invalid or the operands, the result or the
    instruction images do not fit the preset.
    """
    for n_, v in (("M", M), ("K", K), ("N", N)):
        _check_dim(n_, v)
    p = params
    vl = p.vl
    KT, NT = math.ceil(K / vl), math.ceil(N / vl)
    mc = p.mxm_acc_words                 # rows per accumulator chunk
    where = f"matmul {M}x{K}x{N} on preset {p.name!r}"
    for what, need in (("A (M x K-tiles)", M * KT), ("B^T (N x K-tiles)", N * KT),
                       ("C (M x N-tiles)", M * NT)):
        if need > p.mem_words:
            raise CompileError(f"{where}: {what} needs {need} words of one MEM bank, a bank holds "
                               f"{p.mem_words}")

    if relu and requantize is None:
        raise CompileError("relu needs requantize=(multiplier, shift)")
    if requantize is not None:
        mult, rq_shift = requantize
        if not -(1 << 31) <= int(mult) < (1 << 31) or not 0 <= int(rq_shift) < 32:
            raise CompileError(f"requantize multiplier must be int32 and shift 0..31, not "
                               f"{requantize!r}")
        need_alus = 2 if relu else 1
        if p.vxm_alus < need_alus:
            raise CompileError(f"{where}: the fused epilogue needs {need_alus} VXM ALU(s); preset "
                               f"{p.name!r} has {p.vxm_alus}")
        if M * NT > p.mem_words:
            raise CompileError(f"{where}: C needs {M * NT} words of one MEM bank")

    mxm = p.slice("mxm_w")
    s_a, s_b = p.slice("mem_w0"), p.slice("mem_w1")
    out_slices = p.mem_slice_list[:4]
    d_read = isa.BY_MNEMONIC["READ"].d_func(p)
    d_acc = isa.BY_MNEMONIC["ACC"].d_func(p)
    d_abc = isa.BY_MNEMONIC["ABC"].d_func(p)
    lat_a = d_read + abs(s_a.position - mxm.position)      # READ A at t -> ABC at t + lat_a
    lat_b = d_read + abs(s_b.position - mxm.position)      # READ B at t -> LW at t + lat_b
    lat_w = [d_acc + abs(s.position - mxm.position) for s in out_slices]
    q_a, q_b = f"{s_a.name}.read", f"{s_b.name}.read"
    q_w = [f"{s.name}.write" for s in out_slices]

    sched = Schedule(p)
    lw_free, abc_free, acc_free = lat_b, lat_a, 0
    mem_image = []
    out_desc = TensorDesc("C", (M, N), "int32", [(s.index, 1) for s in out_slices], base=0)
    if requantize is not None:
        epilogue, acc_free, mem_image, out_desc = _requant_epilogue(
            p, sched, mxm, int(mult), int(rq_shift), relu, M, N)
    prev_iw, prev_last_abc = -1, -1
    last_acc_read = {}                   # accumulator row -> cycle of its last ACC
    for m0 in range(0, M, mc):
        mm = min(mc, M - m0)
        for nt in range(NT):
            nn = min(vl, N - nt * vl)
            for kt in range(KT):
                # weights: one LW per output lane of this N-tile
                w0 = max(lw_free, prev_iw + 1)
                for r in range(nn):
                    t = w0 + r
                    sched.place("mxm_w.weights", t, "LW", row=r, stream=_STREAM_B, dir=Dir.WEST)
                    sched.place(q_b, t - lat_b, "READ", addr=kt * N + nt * vl + r,
                                stream=_STREAM_B, dir=Dir.WEST)
                iw = max(w0 + nn, prev_last_abc)     # may share the previous tile's last ABC cycle
                sched.place("mxm_w.weights", iw, "IW")
                # activations: one ABC per row; an overwriting ABC must land after the row's ACC
                a0 = max(abc_free, iw + 1)
                if kt == 0:
                    for r in range(mm):
                        if r in last_acc_read:
                            a0 = max(a0, last_acc_read[r] - d_abc - r + 1)
                for r in range(mm):
                    t = a0 + r
                    sched.place("mxm_w.compute", t, "ABC", acc=r, stream=_STREAM_A, dir=Dir.WEST,
                                accumulate=int(kt > 0))
                    sched.place(q_a, t - lat_a, "READ", addr=kt * M + m0 + r,
                                stream=_STREAM_A, dir=Dir.WEST)
                abc_free, prev_last_abc, prev_iw, lw_free = a0 + mm, a0 + mm - 1, iw, iw + 1
                if kt == KT - 1:
                    for r in range(mm):
                        tc = max(acc_free, a0 + r + d_abc)
                        sched.place("mxm_w.result", tc, "ACC", acc=r, group=_GROUP_C, dir=Dir.EAST)
                        acc_free = tc + 1
                        last_acc_read[r] = tc
                        if requantize is not None:
                            epilogue(tc, p.mem_words + nt * M + m0 + r)
                            continue
                        for b in range(4):
                            sched.place(q_w[b], tc + lat_w[b], "WRITE",
                                        addr=p.mem_words + nt * M + m0 + r,
                                        stream=4 * _GROUP_C + b, dir=Dir.EAST)
    queues, cycles = sched.emit()
    pkg = Package(
        name=name or f"matmul_{M}x{K}x{N}",
        params=p,
        queues=queues,
        inputs=[
            TensorDesc("A", (M, K), "int8", [(s_a.index, 0)], base=0),
            TensorDesc("B", (K, N), "int8", [(s_b.index, 0)], base=0, transposed=True),
        ],
        outputs=[out_desc],
        predicted_cycles=cycles,
        mem_image=mem_image,
        meta={"macs": M * K * N, "mxm_busy_cycles": sched.count("ABC"),
              "shape": [M, K, N]},
    )
    pkg.validate()
    return pkg


def _requant_epilogue(p, sched, mxm, mult, shift, relu, M, N):
    """Set up the VXM epilogue of a matmul: returns ``(place(t_acc, addr), first free ACC cycle,
    MEM image, output descriptor)``.

    The multiplier's four bytes are stored (MSB first) in four words of ``mem_e0`` bank 0 and
    shifted into ALU0's constant register by four ``VLC`` (shift-in) before the first ACC.
    """
    vx = p.slice("vxm")
    src = p.slice("mem_e0")                 # constant words, flowing west into the VXM
    dst = src                               # int8 result rows, bank 1
    d_read = isa.BY_MNEMONIC["READ"].d_func(p)
    d_acc = isa.BY_MNEMONIC["ACC"].d_func(p)
    d_vxm = isa.BY_MNEMONIC["VREQ"].d_func(p)
    lat_c = d_read + abs(vx.position - src.position)
    const_stream = p.streams - 1
    image = []
    # words 0..3 hold the multiplier's bytes (MSB first); constant complete after the last VLC
    # VREQ needs the multiplier: the first ALU that has it; VRELU on another ALU
    req_roles = isa.vxm_alus_with(p, "VREQ")
    if not req_roles or (relu and p.vxm_alus < 2):
        raise CompileError(f"matmul epilogue on preset {p.name!r}: VREQ needs a VXM ALU with "
                           f"the 32x32 multiplier (vxm_mul_alus={isa.vxm_unit_alus(p, 'mul')})"
                           f"{' and VRELU another ALU' if relu else ''}")
    req_q = f"vxm.{req_roles[0]}"
    relu_q = "vxm." + next(r for r in isa.VXM_ALU_ROLES[:p.vxm_alus] if r != req_roles[0]) \
        if relu else None
    first_vreq = load_const(sched, p, image, isa.VXM_ALU_ROLES.index(req_roles[0]), mult, lat_c,
                            src=src, addr=0, stream=const_stream)
    arrive = d_acc + abs(vx.position - mxm.position)    # ACC at t -> VXM samples at t + arrive
    acc_free = max(0, first_vreq - arrive)

    def place(t_acc, addr):
        t = t_acc + arrive
        # with relu, VREQ sends its result west and VRELU reads it back from the west output
        # column (chaining), so the two ALUs never drive the same stream in one cycle
        f = dict(a_stream=4 * _GROUP_C, a_dir=Dir.EAST, a_chain=0, b_stream=0, b_dir=0,
                 b_mode=isa.VXM_B_CONST, out_dir=Dir.WEST if relu else Dir.EAST, dtype=2,
                 imm=shift)
        sched.place(req_q, t, "VREQ", **f)
        t_out = t + d_vxm
        if relu:
            t = t_out + 1                   # chained: the VREQ result in the output column
            sched.place(relu_q, t, "VRELU", a_stream=4 * _GROUP_C, a_dir=Dir.WEST, a_chain=1,
                        b_stream=0, b_dir=0, b_mode=0, out_dir=Dir.EAST, dtype=0, imm=0)
            t_out = t + isa.BY_MNEMONIC["VRELU"].d_func(p)
        sched.place(f"{dst.name}.write", t_out + abs(dst.position - vx.position), "WRITE",
                    addr=addr, stream=4 * _GROUP_C, dir=Dir.EAST)

    desc = TensorDesc("C", (M, N), "int8", [(dst.index, 1)], base=0)
    return place, acc_free, image, desc


_ELEMENTWISE_BINARY = ("ADD", "SUB", "MUL", "MIN", "MAX", "AND", "OR", "XOR")
_ELEMENTWISE_UNARY = ("RELU", "ABS", "NEG")


def compile_elementwise(params: LpuParams, op: str, R: int, C: int, *,
                        name: str | None = None) -> Package:
    """Compile ``Y = op(A, B)`` (or ``op(A)``) on int8 ``R x C`` tensors, one VXM op per vector.

    ``A`` lives in ``mem_w0`` bank 0 and ``B`` in ``mem_w1`` bank 0 (both stream east into the
    VXM), ``Y`` in ``mem_e0`` bank 1. Rows are placed by :func:`firmware.dataflow.commit`, which
    pipelines them one vector per cycle when the resources allow.
    """
    from .dataflow import INT8, Flow, MemSrc, commit
    p = params
    op = op.upper()
    if op not in _ELEMENTWISE_BINARY + _ELEMENTWISE_UNARY:
        raise CompileError(f"unknown elementwise op {op!r}; known: "
                           f"{', '.join(_ELEMENTWISE_BINARY + _ELEMENTWISE_UNARY)}")
    for n_, v in (("R", R), ("C", C)):
        _check_dim(n_, v)
    if p.vxm_alus < 1:
        raise CompileError(f"elementwise ops need a VXM; preset {p.name!r} has none")
    tiles = math.ceil(C / p.vl)
    if R * tiles > p.mem_words:
        raise CompileError(f"elementwise {R}x{C} on preset {p.name!r} needs {R * tiles} words "
                           f"of one MEM bank, a bank holds {p.mem_words}")
    binary = op in _ELEMENTWISE_BINARY
    sched = Schedule(p)
    earliest = 0
    for j in range(tiles):
        for r in range(R):
            w = j * R + r
            flow = Flow(p)
            a = MemSrc((("mem_w0", w),), stream=0)
            b = MemSrc((("mem_w1", w),), stream=1) if binary else None
            y = flow.vxm(op, a, b, dtype=INT8, out_dir=Dir.EAST)
            flow.write(y, [("mem_e0", p.mem_words + w)])
            earliest = commit(sched, flow, earliest) + 1
    queues, cycles = sched.emit()
    s_a, s_b, s_y = p.slice("mem_w0"), p.slice("mem_w1"), p.slice("mem_e0")
    inputs = [TensorDesc("A", (R, C), "int8", [(s_a.index, 0)], base=0)]
    if binary:
        inputs.append(TensorDesc("B", (R, C), "int8", [(s_b.index, 0)], base=0))
    pkg = Package(name=name or f"{op.lower()}_{R}x{C}", params=p, queues=queues, inputs=inputs,
                  outputs=[TensorDesc("Y", (R, C), "int8", [(s_y.index, 1)], base=0)],
                  predicted_cycles=cycles, meta={"vectors": R * tiles})
    pkg.validate()
    return pkg
