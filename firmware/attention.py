"""Attention kernel: ``softmax(Q K^T * scale + mask) V`` for one or several heads, on the chip.

The kernel works in the *transposed domain*: the MXM holds a tile of up to VL queries as its
weights (``LW`` row i = query i), so every key row ``K[j]`` streamed through it yields the vector
``S[:, j]`` over the tile's queries. Softmax statistics are then reductions over *time* (over the
key rows), which the VXM does lane-wise, and no cross-lane operation is needed anywhere. The
exponentials come back into the MXM as weight *columns* (``LWT``), so ``P V`` is computed as
``O^T`` rows (one per head dimension n, vector over queries) and normalised lane-wise.

Per query tile (``i0 .. i0+VL-1``) and head, over the key blocks the tile sees (causal: up to
the block of the last query's last key, or all when some query sees none):

1. **max** (one key row every 3 cycles): ``ABC`` K[j] -> ``ACC`` -> ALU D ``VSEL`` (mask, else
   ``MASKED_S``) -> ALU C ``VMAX`` with its own previous result (a 3-cycle chain loop). Then
   ALU B adds ``delta`` and ALU C loads ``m + delta`` into its constant register (``VLC``).
2. **exp** (one key row every 3 cycles, every 4 in rows with a masked lane): ``ABC`` K[j] ->
   ``ACC`` -> D ``VSEL`` (only rows with a masked lane) -> C ``VSUB`` -> A ``VMULSHR`` (score
   scale) -> D ``VEXP`` (``E``, Q16, full precision; on A in rows with a VSEL) west, whose low
   byte ``lo`` (signed) is ``WRITE`` to ``mem_w0`` bank 1 -> B ``VADD E8_ROUND`` east, whose
   byte 1 ``e8 = round(E / 256)`` is ``WRITE`` to ``mem_e1`` bank 0 (so ``lo = E - 256 e8``
   exactly). B holds ``E8_ROUND`` during this pass (``load_const`` after the max pass, and
   ``delta`` again after it). Each row is placed at the first cycle (at least 3 after the
   previous row) where no instruction meets another and no result is driven in a cycle and
   direction already driven; the rows of each kind are then uniform and ``REPEAT`` compresses
   them (A's two instructions in rows with a VSEL excepted).
3. **P V** per key block of VL keys: ``LWT`` the block's ``e8`` rows, ``IW``, ``ABC`` the rows
   of ``V^T`` (accumulating over blocks) and a row of ones (``sum e8``); then ``LWT`` the
   block's ``lo`` rows, ``IW``, ``ABC`` the row of ones (``sum lo``). ``ACC sum e8`` -> D
   ``VSHL 8`` -> B ``VADD`` ``ACC sum lo`` (``L = sum E`` exactly) -> D ``VRECIP`` -> B
   ``VSHL 7`` -> ``VLC`` into ALU C (``rq = 2**39 / L``), and each ``O^T`` row ``ACC`` -> C
   ``VREQ`` (``O_acc * rq / 2**31 = O_acc 256 / L``) -> int8 row ``WRITE`` to ``mem_e0`` bank 1.

The integer algorithm is :func:`openlpu.verification.reference.attention_int`; the chip's
output is compared with it bit-exactly. Constant registers: ALU A holds the score multiplier,
B ``delta`` (``E8_ROUND`` in the exp pass), D ``MASKED_S`` for the whole program, C
``m + delta`` or ``rq`` per tile.

Memory map (``mem_w0``/``mem_w1``/``mem_e0`` are the MEM slices next to the VXM):

* ``mem_w0`` bank 0: ``K`` of head h at word ``h*Lk + j``; bank 1: ``lo`` scratch rows.
* ``mem_w1`` bank 0: ``V^T`` of head h, key block b, row n at ``h*KB*d + b*d + n``, then VL
  rows of ones (row k: lanes 0..k, for a block of k + 1 keys); bank 1: ``Q`` of head h at
  ``h*Lq + i``.
* ``mem_e0`` bank 0: constant bytes (four int32) and the VL+1 causal mask patterns; bank 1:
  ``O^T`` of head h, query tile t, row n at ``h*QT*d + t*d + n``.
* ``mem_e1`` bank 0: ``e8`` scratch rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from openlpu import isa
from openlpu import vxm_ops as ops
from openlpu.isa import Dir
from openlpu.params import LpuParams

from .chipstate import ChipState, Emitted, transactional
from .package import Package, TensorDesc
from .schedule import CompileError
from .vxmconst import CONST_WORDS, assign_alus, check_vxm_kernel, load_const, vxm_fields

__all__ = ["compile_attention", "emit_attention", "attention_tensor_names", "AttentionConsts",
           "attention_consts",
           "MASKED_S", "E8_ROUND", "L_SHIFT", "R_SHIFT", "EXP_HALF_BOUND"]

# streams flowing west into the MXM (group 1) and into the VXM from the east
_S_K, _S_Q, _S_V, _S_E = 4, 5, 6, 7
_S_MASK = 7
_ROW_MAX = 3        # cycles per key row in the max pass (the VMAX chain loop)
_ROW_EXP = 3        # fewest cycles per key row in the exp pass (4 in rows with masked lanes)

# -- the algorithm's integer constants (verification/reference.py: attention_int uses them) --
MASKED_S = -(1 << 24)   # score (Q.K units) of a masked position: below any int8 dot product
E8_ROUND = 128          # e8 = byte 1 of E + 128 = round(E / 256): below 0.5 * 256, an int8
L_SHIFT = 8             # attention denominator L = (sum e8 << 8) + sum lo = sum E (Q16)
R_SHIFT = L_SHIFT - 1   # rq = fx_recip(L) << 7 = 2**39 / L: VREQ(O_acc, rq, 0) = O_acc 256 / L


@dataclass(frozen=True)
class AttentionConsts:
    """Integer constants of the attention algorithm for one score scale.

    ``mult / 2**shift`` converts a dot product ``Q.K`` into Q16.16 scaled scores;
    ``delta`` (Q.K units) is added to the row maximum so that every exponential is below 0.5
    and rounds to an int8 (``e8 = round(E / 256)`` <= 127, ``E`` the Q16 exponential).
    """
    mult: int
    shift: int
    delta: int


def _exp_half_bound() -> int:
    """Smallest Q16.16 ``d`` with ``(fx_exp(z) + E8_ROUND) >> 8 <= 127`` for every ``z <= -d``."""
    z = -np.arange(0, 200000, dtype=np.int64)
    e8 = (ops.fx_exp(z, 0) + E8_ROUND) >> 8
    # running maximum over z <= -d, scanning from very negative up
    worst_below = np.maximum.accumulate(e8[::-1])[::-1]
    ok = np.nonzero(worst_below <= 127)[0]
    return int(ok[0])


EXP_HALF_BOUND = _exp_half_bound()


def attention_consts(scale: float) -> AttentionConsts:
    """Constants for ``scores = (Q.K) * scale`` (``scale`` > 0, real units per Q.K unit)."""
    if not scale > 0:
        raise ValueError(f"attention score scale must be positive, not {scale!r}")
    q16 = scale * 65536.0
    shift = 0
    while q16 * (1 << (shift + 1)) < (1 << 31) and shift < 62:
        shift += 1
    mult = int(round(q16 * (1 << shift)))
    if not 0 < mult < (1 << 31):
        raise ValueError(f"attention score scale {scale!r} does not fit an int32 multiplier")
    # smallest delta with MULSHR(-delta) <= -EXP_HALF_BOUND (MULSHR is monotonic)
    delta = max(1, int(np.ceil(EXP_HALF_BOUND * (1 << shift) / mult)))
    while ops.binary_op("MULSHR", -delta, mult, 2, shift) > -EXP_HALF_BOUND:
        delta += 1
    # a masked key must give exp = 0 (the chip skips keys no query of a tile sees): its score
    # is at least 2**24 - 2**20 below m + delta when the query sees some key (|Q.K| <= 2**20
    # for head_dim <= 64)
    if ops.fx_exp(ops.binary_op("MULSHR", MASKED_S + (1 << 20), mult, 2, shift), 0) != 0:
        raise ValueError(f"attention score scale {scale!r} is too small: masked keys would "
                         f"not vanish (scale * 2**24 must exceed about 12)")
    return AttentionConsts(mult, shift, delta)


def attention_tensor_names(heads: int) -> dict:
    """Names of the per-head tensors of an attention package: ``{"Q": ["Q0", ...], ...}``."""
    return {k: [f"{k}{h}" for h in range(heads)] for k in ("Q", "K", "V", "O")}


def compile_attention(params: LpuParams, seq_q: int, seq_k: int, head_dim: int, *,
                      heads: int = 1, scale: float, causal: bool = False, key_mask=None,
                      name: str | None = None) -> Package:
    """Compile attention for int8 ``Q`` (seq_q x head_dim), ``K``, ``V`` (seq_k x head_dim) per head.

    ``scale`` is the real-valued score scale (e.g. ``q_scale * k_scale / sqrt(head_dim)``).
    With ``causal``, query i sees keys ``j <= i + seq_k - seq_q``. The output ``O{h}`` is int8 in
    the units of V. Raises :class:`CompileError` when the preset lacks a VXM with four ALUs, the
    scale is not positive or too small for the causal mask to vanish, or a dimension, the memory
    map or an instruction image does not fit.

    ``key_mask`` (``seq_k`` values, 1 a real key, 0 padding; compiled into the program) masks
    padding keys for every query as the causal mask does (their scores become ``MASKED_S``
    before the row maximum, so their exponentials are exactly 0): with it the output of the
    real keys equals that of the unpadded sequence (``minilm_int.attention_head_int``).
    """
    where = f"attention {heads}x({seq_q}x{seq_k}, d={head_dim}) on preset {params.name!r}"
    state = ChipState(params, where)
    out = emit_attention(state, seq_q, seq_k, head_dim, heads=heads, scale=scale, causal=causal,
                         key_mask=key_mask)
    d = head_dim
    return state.package(
        name=name or f"attention_{heads}x{seq_q}x{seq_k}x{d}{'_causal' if causal else ''}",
        inputs=out.inputs, outputs=out.outputs, meta=out.meta)


def _key_padding(where, key_mask, seq_k) -> list:
    """Per key, whether it is padding (``key_mask`` 0); all False without a mask."""
    if key_mask is None:
        return [False] * seq_k
    m = np.asarray(key_mask)
    if m.shape != (seq_k,) or m.dtype.kind not in "iub" or not np.isin(m, (0, 1)).all():
        raise CompileError(f"{where}: key_mask must be {seq_k} values 0 or 1")
    return [not bool(v) for v in m]


def _given_qkv(where, inputs, heads, seq_q, seq_k, d, vl, w0, w1) -> dict:
    """The given ``inputs=(Q, K, V)`` of :func:`emit_attention` checked against the memory map:
    ``{"Q": desc, "K": desc, "V^T": desc}`` (only the given ones)."""
    if inputs is None:
        return {}
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 3:
        raise CompileError(f"{where}: emit_attention takes inputs=(Q, K, V)")
    if heads > 1 and (d != vl or seq_q > vl or seq_k > vl):
        raise CompileError(f"{where}: given layouts of several heads need head_dim == VL "
                           f"({vl}) and seq_q, seq_k <= VL (one row-wise tile per head)")
    out = {}
    for what, desc, rows, unit, tr in (("Q", inputs[0], seq_q, (w1.index, 1), False),
                                       ("K", inputs[1], seq_k, (w0.index, 0), False),
                                       ("V^T", inputs[2], seq_k, (w1.index, 0), True)):
        if desc is None:
            continue
        if not isinstance(desc, TensorDesc) or desc.dtype != "int8" or \
                tuple(desc.shape) != (rows, heads * d) or bool(desc.transposed) != tr or \
                desc.layout != [[(unit[0], unit[1], 0, 1)]]:
            raise CompileError(f"{where}: the given {what[0]} ({getattr(desc, 'name', desc)!r}) "
                               f"must be int8 ({rows}, {heads * d}){' stored transposed' * tr}, "
                               f"dense from word 0 of MEM slice {unit[0]} bank {unit[1]}")
        out[what] = desc
    return out


@transactional
def emit_attention(state: ChipState, seq_q: int, seq_k: int, head_dim: int, *, heads: int = 1,
                   scale: float, causal: bool = False, key_mask=None, earliest: int = 0,
                   names: dict | None = None, inputs: tuple | None = None) -> Emitted:
    """Emit the attention of :func:`compile_attention` on ``state``: every instruction at or
    after ``earliest``, after the weight loads, ABCs and accumulator rows already claimed on
    the state. ``names`` (as :func:`attention_tensor_names` returns them, the default) names
    the tensors. Its MEM words are fixed (the module docstring's memory map) and reserved in
    the state's allocator (an :class:`~openlpu.firmware.memalloc.AllocError` names a word
    another kernel holds); the stream registers from ``earliest`` to its last instruction are
    marked as used (:meth:`ChipState.opaque_streams`: the exp pass's search for free drive
    cycles is local to the kernel). ``key_mask``: as :func:`compile_attention`; a padding
    key's score row takes the all-masked pattern in both passes (its exp-pass row has the
    ``VSEL``, 4 cycles instead of 3, and its ``VEXP`` on ALU A).

    ``inputs=(Q, K, V)`` (each a :class:`TensorDesc` or None): a tensor of all heads that another
    kernel wrote (or copied) to exactly the words of the memory map, int8, one plane dense from
    word 0 of its bank: ``Q`` in ``mem_w1`` bank 1 and ``K`` in ``mem_w0`` bank 0 row-wise
    (``(seq, heads * head_dim)``), ``V`` in ``mem_w1`` bank 0 stored transposed; those words
    are then not reserved again (the writer holds them) and the returned ``inputs`` hold the
    given descriptor in place of the per-head ones. Every head's words must be where the map
    puts them: with more than one head this needs ``head_dim == VL`` and ``seq_q, seq_k <=
    VL`` (a row-wise tile per head)."""
    p = state.params
    vl, S = p.vl, p.superlanes
    where = f"attention {heads}x({seq_q}x{seq_k}, d={head_dim}) on preset {p.name!r}"
    if not isinstance(earliest, int) or earliest < 0:
        raise CompileError(f"{where}: earliest must be a cycle >= 0, not {earliest!r}")
    check_vxm_kernel(p, where, "attention", {"seq_q": seq_q, "seq_k": seq_k,
                                             "head_dim": head_dim, "heads": heads})
    if head_dim > vl:
        raise CompileError(f"{where}: head_dim {head_dim} exceeds the vector length {vl}")
    if head_dim + 2 > p.mxm_acc_words - 1:
        raise CompileError(f"{where}: needs {head_dim + 3} accumulator rows, preset has "
                           f"{p.mxm_acc_words}")
    try:
        consts = attention_consts(float(scale))
    except (TypeError, ValueError) as e:
        raise CompileError(f"{where}: {e}") from None
    padded = _key_padding(where, key_mask, seq_k)

    QT, KB = math.ceil(seq_q / vl), math.ceil(seq_k / vl)
    d = head_dim
    # -- memory map --------------------------------------------------------------------------
    const_words = 4 * CONST_WORDS              # 4 int32 constants, 4 bytes each (MSB first)
    mask_base = const_words
    v_ones = heads * KB * d
    need = {
        "K (heads x seq_k) in mem_w0 bank 0": heads * seq_k,
        "lo scratch (seq_k) in mem_w0 bank 1": seq_k,
        "V^T and VL rows of ones in mem_w1 bank 0": v_ones + vl,
        "Q (heads x seq_q) in mem_w1 bank 1": heads * seq_q,
        "constants and masks in mem_e0 bank 0": mask_base + vl + 1,
        "O^T (heads x query tiles x head_dim) in mem_e0 bank 1": heads * QT * d,
        "e8 scratch (seq_k) in mem_e1 bank 0": seq_k,
    }
    for what, words in need.items():
        if words > p.mem_words:
            raise CompileError(f"{where}: {what} needs {words} words, a bank holds {p.mem_words}")

    w0, w1, e0, e1 = (p.slice(n) for n in ("mem_w0", "mem_w1", "mem_e0", "mem_e1"))
    mxm, vx = p.slice("mxm_w"), p.slice("vxm")
    bank1 = p.mem_words
    d_abc = state.lead("ABC", mxm, mxm)                  # ABC at t -> its ACC
    d_simple = state.lead("VADD", vx, vx)                # 2-cycle VXM op at t -> its drive
    d_func = state.lead("VEXP", vx, vx)                  # function unit at t -> its drive

    def lat(src, dst):                         # READ at t -> sampled by dst at t + lat
        return state.lead("READ", src, dst)

    lat_acc = state.lead("ACC", mxm, vx)                 # ACC at t -> VXM samples at t + lat_acc
    chain = state.lead("VADD", vx, vx, chain=True)       # simple op at t -> chained at t + chain
    chain_fx = state.lead("VEXP", vx, vx, chain=True)
    to_w0 = state.lead(None, vx, w0, "WRITE")            # VXM drive -> WRITE in mem_w0
    to_e0 = state.lead(None, vx, e0, "WRITE")
    to_e1 = state.lead(None, vx, e1, "WRITE")

    sched = state
    stream_mark = state.stream_hi               # stream slots other kernels claimed
    n_abc = [0]
    # MEM words: the memory map of the module docstring, reserved in the state's allocator
    tn = names or attention_tensor_names(heads)
    given = _given_qkv(where, inputs, heads, seq_q, seq_k, d, vl, w0, w1)
    for unit, base, words, what in (
            ((w0.index, 0), 0, heads * seq_k, "K"),
            ((w0.index, 1), 0, seq_k, "lo scratch"),
            ((w1.index, 0), 0, v_ones, "V^T"),
            ((w1.index, 0), v_ones, vl, "ones rows"),
            ((w1.index, 1), 0, heads * seq_q, "Q"),
            ((e0.index, 0), 0, mask_base + vl + 1, "constants and masks"),
            ((e0.index, 1), 0, heads * QT * d, "O^T"),
            ((e1.index, 0), 0, seq_k, "e8 scratch")):
        if given.get(what) is None:
            state.alloc.reserve(f"{tn['O'][0]} attention {what}", unit, base, words)
    # logical ALUs A..D on VXM ALUs with the units they need (A also runs the VEXP of the
    # rows where D issues a VSEL: a causal mask needs two ALUs with the function pipelines)
    place = assign_alus(p, where, {"A": ("VMULSHR",) + (("VEXP",) if causal or any(padded)
                                                         else ()),
                                   "B": (), "C": ("VREQ",), "D": ("VEXP", "VRECIP")})
    alu = {k: f"vxm.alu{i}" for k, i in place.items()}

    def vxm(a, t, mnemonic, **f):
        sched.place(alu[a], t, mnemonic, **vxm_fields(**f))

    def read(sl, t_use, dst, addr, stream):
        sched.place(f"{sl.name}.read", t_use - lat(sl, dst), "READ", addr=addr, stream=stream,
                    dir=Dir.WEST)

    # -- constants: three int32 values shifted into ALU constant registers ---------------------
    image = state.image
    for nb in range(1, vl + 1):                # ones row for a block of nb keys: lanes < nb
        image.append((w1.index, v_ones + nb - 1, bytes([1]) * nb + bytes(vl - nb)))
    t = earliest + lat(e0, vx)
    for k, (a, value) in enumerate((("A", consts.mult), ("B", consts.delta), ("D", MASKED_S))):
        t = load_const(sched, p, image, place[a], value, t, src=e0,
                       addr=CONST_WORDS * k, stream=_S_MASK)
    for k in range(CONST_WORDS):               # the fourth constant, E8_ROUND: loaded per tile
        image.append((e0.index, 3 * CONST_WORDS + k,
                      bytes([(E8_ROUND >> (8 * (3 - k))) & 0xFF]) * vl))
    for pat in range(vl + 1):                  # pattern p: lanes < p masked
        image.append((e0.index, mask_base + pat, bytes(pat) + b"\xff" * (vl - pat)))
    vxm_free = t                               # first cycle the VXM pipeline may start

    off = seq_k - seq_q
    s_row = p.mxm_acc_words - 1                # accumulator row of the score vectors
    # weights queue: next LW/LWT may issue here (after the state's earlier weight loads)
    loaded = state.free_after("mxm_w weight buffer (loading)")
    weights_free = max(earliest + lat(w1, mxm), loaded)
    last_iw = loaded - 1 if loaded else -S      # cycle of the last IW
    abc_free = earliest + lat(w0, mxm)         # compute queue: next ABC may issue here
    last_abc = state.free_after("mxm_w weight buffer (in use)") - 1
    acc_rows = [s_row] + list(range(d + 2))    # accumulator rows this kernel uses
    first_row_use = max(state.free_after(f"mxm_w accumulator row {r}") for r in acc_rows)
    abc_free = max(abc_free, first_row_use - d_abc)
    first_lw = None
    for h in range(heads):
        for qt in range(QT):
            i0 = qt * vl
            nq = min(vl, seq_q - i0)

            def mask_addr(j):
                if padded[j]:
                    return mask_base + vl              # every lane masked
                if not causal:
                    return mask_base
                return mask_base + min(max(j - i0 - off, 0), vl)

            # -- Q tile into the weights: LW row r = query i0 + r ----------------------------
            t_lw = max(weights_free, last_iw + 1, last_abc + 1)   # w1 reads follow the V^T reads
            first_lw = t_lw if first_lw is None else first_lw
            for r in range(nq):
                read(w1, t_lw + r, mxm, bank1 + h * seq_q + i0 + r, _S_Q)
                sched.place("mxm_w.weights", t_lw + r, "LW", row=r, stream=_S_Q, dir=Dir.WEST)
            t_iw = max(t_lw + nq, last_abc)
            sched.place("mxm_w.weights", t_iw, "IW")
            last_iw, weights_free = t_iw, t_iw + 1

            # keys the tile processes: kt (causal: none beyond the last query's, rounded up to a
            # whole key block, whose V^T rows hold every key of the block; all keys when some
            # query sees none, whose softmax is uniform over every key); rows j >= jm have
            # masked lanes and need the VSEL in the exp pass
            if not causal:
                kt, jm = seq_k, seq_k
            elif i0 + off < 0:
                kt, jm = seq_k, 0
            else:
                kt = min(seq_k, math.ceil((i0 + nq + off) / vl) * vl)
                jm = i0 + off + 1
            KBt = math.ceil(kt / vl)

            def score_row(t_abc, j, acc_row):
                """ABC K[j] at t_abc and ACC it; returns the cycle the VXM samples it."""
                read(w0, t_abc, mxm, h * seq_k + j, _S_K)
                sched.place("mxm_w.compute", t_abc, "ABC", acc=acc_row, stream=_S_K,
                            dir=Dir.WEST, accumulate=0)
                n_abc[0] += 1
                t_acc = t_abc + d_abc
                sched.place("mxm_w.result", t_acc, "ACC", acc=acc_row, group=0, dir=Dir.EAST)
                return t_acc + lat_acc

            # -- pass 1: m = max_j masked S ---------------------------------------------------
            t0 = max(abc_free, t_iw + 1, vxm_free - d_abc - lat_acc)
            for j in range(kt):
                v = score_row(t0 + _ROW_MAX * j, j, s_row)
                read(e0, v, vx, mask_addr(j), _S_MASK)
                vxm("D", v, "VSEL", b_stream=_S_MASK, b_dir=Dir.WEST, out_dir=Dir.EAST)
                if j == 0:
                    vxm("C", v + chain, "VMAX", a_dir=Dir.EAST, a_chain=1, b_dir=Dir.EAST,
                        b_mode=isa.VXM_B_CHAIN, out_dir=Dir.WEST)
                else:
                    vxm("C", v + chain, "VMAX", a_dir=Dir.WEST, a_chain=1, b_dir=Dir.EAST,
                        b_mode=isa.VXM_B_CHAIN, out_dir=Dir.WEST)
            last_abc = t0 + _ROW_MAX * (kt - 1)
            t_m = v + 2 * chain                # the final maximum, chained, west output side
            vxm("B", t_m, "VADD", a_dir=Dir.WEST, a_chain=1, b_mode=isa.VXM_B_CONST,
                out_dir=Dir.EAST)
            vxm("C", t_m + chain, "VLC", a_dir=Dir.EAST, a_chain=1, dtype=2, imm=0)
            c_ready = t_m + chain + 1          # ALU C's constant is m + delta from here on

            # -- pass 2: lo rows into mem_w0 bank 1, e8 rows into mem_e1 bank 0 ---------------
            # B's constant becomes E8_ROUND for this pass (delta again after it). Each row is
            # placed at the first VSUB cycle u where none of its instructions meets another in
            # a queue and none of its results is driven in a cycle and direction already
            # driven: rows without a masked lane come every 3 cycles, rows with one (an extra
            # VSEL) every 4 (the steady states repeat, so REPEAT compresses them)
            t_b = load_const(sched, p, [], place["B"], E8_ROUND, t_m + 1, src=e0,
                             addr=3 * CONST_WORDS, stream=_S_MASK)
            s7_busy = set(range(t_m + 1, t_b))         # VXM samples of stream 7 (constant bytes)
            drives = {Dir.EAST: {t_m + d_simple}, Dir.WEST: set()}
            fx_at = 2 * chain + d_func                 # VSUB at u -> VEXP result driven at u + fx_at
            add_at = 2 * chain + chain_fx              # VSUB at u -> VADD E8_ROUND issues here
            u = max(c_ready, last_abc + 1 + d_abc + lat_acc + chain, t_b - add_at)
            t_abc_prev = last_abc
            for j in range(kt):
                masked = j >= jm or padded[j]
                exp_alu = "A" if masked else "D"       # D issues the VSELs of masked rows

                def plan(u):
                    v = u - chain if masked else u     # cycle the VXM samples the score
                    t_abc = v - d_abc - lat_acc
                    slots = [("mxm_w.compute", t_abc), ("mxm_w.result", t_abc + d_abc),
                             (f"{w0.name}.read", t_abc - lat(w0, mxm)),
                             (alu["C"], u), (alu["A"], u + chain), (alu[exp_alu], u + 2 * chain),
                             (alu["B"], u + add_at),
                             (f"{w0.name}.write", u + fx_at + to_w0),
                             (f"{e1.name}.write", u + add_at + d_simple + to_e1)]
                    drv = [(Dir.EAST, u + d_simple), (Dir.WEST, u + chain + d_simple),
                           (Dir.WEST, u + fx_at), (Dir.EAST, u + add_at + d_simple)]
                    if masked:
                        slots += [(alu["D"], v), (f"{e0.name}.read", v - lat(e0, vx))]
                        drv.append((Dir.EAST, v + d_simple))
                    return v, t_abc, slots, drv

                while True:
                    v, t_abc, slots, drv = plan(u)
                    if (t_abc > t_abc_prev and not any(sched.busy(q, t) for q, t in slots)
                            and not any(t in drives[dr] for dr, t in drv)
                            and len({(q, t) for q, t in slots}) == len(slots)
                            and not (masked and v in s7_busy)):
                        break
                    u += 1
                for dr, t in drv:
                    drives[dr].add(t)
                assert score_row(t_abc, j, s_row) == v
                if masked:
                    read(e0, v, vx, mask_addr(j), _S_MASK)
                    vxm("D", v, "VSEL", b_stream=_S_MASK, b_dir=Dir.WEST, out_dir=Dir.EAST)
                    vxm("C", u, "VSUB", a_dir=Dir.EAST, a_chain=1, b_mode=isa.VXM_B_CONST,
                        out_dir=Dir.EAST)
                else:                                  # VSUB reads the score itself
                    vxm("C", u, "VSUB", a_dir=Dir.EAST, b_mode=isa.VXM_B_CONST,
                        out_dir=Dir.EAST)
                vxm("A", u + chain, "VMULSHR", a_dir=Dir.EAST, a_chain=1,
                    b_mode=isa.VXM_B_CONST, out_dir=Dir.WEST, imm=consts.shift)
                # E = round(65536 exp(x)) (Q16) west: its low byte lo = E - 256 e8 to mem_w0;
                # E + E8_ROUND east: its byte 1, e8 = round(E / 256), to mem_e1
                vxm(exp_alu, u + 2 * chain, "VEXP", a_dir=Dir.WEST, a_chain=1,
                    out_dir=Dir.WEST, imm=0)
                vxm("B", u + add_at, "VADD", a_dir=Dir.WEST, a_chain=1, b_mode=isa.VXM_B_CONST,
                    out_dir=Dir.EAST)
                t_wl = u + fx_at + to_w0
                sched.place(f"{w0.name}.write", t_wl, "WRITE", addr=bank1 + j, stream=0,
                            dir=Dir.WEST)
                t_w = u + add_at + d_simple + to_e1
                sched.place(f"{e1.name}.write", t_w, "WRITE", addr=j, stream=1,
                            dir=Dir.EAST)
                t_abc_prev = t_abc
                u += _ROW_EXP                          # no denser: uniform rows compress
            last_abc = t_abc_prev
            e8_written, lo_written = t_w, t_wl
            # B's constant back to delta for the next tile's max pass
            load_const(sched, p, [], place["B"], consts.delta, u - _ROW_EXP + add_at + 1,
                       src=e0, addr=CONST_WORDS, stream=_S_MASK)

            # -- pass 3: O_acc = e8 V, sum e8 and sum lo, per key block ------------------------
            # each key block loads two weight sets: its e8 rows (ABC the V^T rows and a row of
            # ones: O_acc, sum e8) and its lo rows (ABC a row of ones: sum lo)
            t_lwt = max(weights_free, last_iw + S)
            for b in range(KBt):
                nb = min(vl, kt - b * vl)
                ones = v_ones + nb - 1
                for src, ready, base, rows in (
                        (e1, e8_written, b * vl,
                         [(h * KB * d + b * d + n, n) for n in range(d)] + [(ones, d)]),
                        (w0, lo_written, bank1 + b * vl, [(ones, d + 1)])):
                    t_lwt = max(t_lwt, ready + 1 + lat(src, mxm))
                    for c in range(nb):
                        read(src, t_lwt + c, mxm, base + c, _S_E)
                        sched.place("mxm_w.weights", t_lwt + c, "LWT", col=c, stream=_S_E,
                                    dir=Dir.WEST)
                    t_iw = max(t_lwt + nb - 1 + S, last_abc)
                    sched.place("mxm_w.weights", t_iw, "IW")
                    last_iw = t_iw
                    t_a = t_iw + 1
                    for k, (addr, acc) in enumerate(rows):
                        read(w1, t_a + k, mxm, addr, _S_V)
                        sched.place("mxm_w.compute", t_a + k, "ABC", acc=acc, stream=_S_V,
                                    dir=Dir.WEST, accumulate=int(b > 0))
                        n_abc[0] += 1
                    last_abc = t_a + len(rows) - 1
                    t_lwt = t_iw + S
            weights_free = t_iw + 1
            abc_free = last_abc + 1

            # -- normalise: L = (sum e8 << 8) + sum lo, rq = recip(L) << 7 into ALU C, --------
            # O^T rows = VREQ(O_acc, rq)
            t_l = last_abc + d_abc
            sched.place("mxm_w.result", t_l, "ACC", acc=d, group=0, dir=Dir.EAST)
            sched.place("mxm_w.result", t_l + chain, "ACC", acc=d + 1, group=0, dir=Dir.EAST)
            v = t_l + lat_acc
            vxm("D", v, "VSHL", b_mode=isa.VXM_B_IMM, b_stream=L_SHIFT, out_dir=Dir.EAST)
            vxm("B", v + chain, "VADD", a_dir=Dir.EAST, a_chain=1, b_dir=Dir.EAST,
                b_mode=isa.VXM_B_STREAM, out_dir=Dir.WEST)
            t = v + 2 * chain
            vxm("D", t, "VRECIP", a_dir=Dir.WEST, a_chain=1, out_dir=Dir.EAST)
            t += chain_fx
            vxm("B", t, "VSHL", a_dir=Dir.EAST, a_chain=1, b_mode=isa.VXM_B_IMM,
                b_stream=R_SHIFT, out_dir=Dir.WEST)
            t += chain
            vxm("C", t, "VLC", a_dir=Dir.WEST, a_chain=1, dtype=2, imm=0)
            t_o = t + 1 - lat_acc
            for n in range(d):
                sched.place("mxm_w.result", t_o + n, "ACC", acc=n, group=0, dir=Dir.EAST)
                v = t_o + n + lat_acc
                vxm("C", v, "VREQ", b_mode=isa.VXM_B_CONST, out_dir=Dir.EAST, imm=0)
                sched.place(f"{e0.name}.write", v + d_simple + to_e0, "WRITE",
                            addr=bank1 + h * QT * d + qt * d + n, stream=0,
                            dir=Dir.EAST)
            vxm_free = v + 1
            abc_free = max(abc_free, t_o + d)   # the next tile's ABCs overwrite no O row early

    end = state.end
    state.claim("mxm_w weight buffer (loading)", first_lw, last_iw, where)
    state.claim("mxm_w weight buffer (in use)", first_lw, last_abc, where)
    for r in acc_rows:
        state.claim(f"mxm_w accumulator row {r}", max(earliest, first_row_use), end - 1, where)
    for i in sorted(set(place.values())):
        state.claim(f"vxm.alu{i} constant register", earliest, end - 1, where)
    state.opaque_streams(earliest, end - 1, where, after=stream_mark)
    ins, outputs = [], []
    for h in range(heads):
        ins += [
            TensorDesc(tn["Q"][h], (seq_q, d), "int8", [(w1.index, 1)], base=h * seq_q),
            TensorDesc(tn["K"][h], (seq_k, d), "int8", [(w0.index, 0)], base=h * seq_k),
            TensorDesc(tn["V"][h], (seq_k, d), "int8", [(w1.index, 0)], base=h * KB * d,
                       transposed=True),
        ]
        outputs.append(TensorDesc(tn["O"][h], (seq_q, d), "int8", [(e0.index, 1)],
                                  base=h * QT * d, transposed=True))
    inputs = [given[w] for w in ("Q", "K", "V^T") if w in given]
    inputs += [t for i, t in enumerate(ins) if ("Q", "K", "V^T")[i % 3] not in given]
    return Emitted(
        end=end, inputs=inputs, outputs=outputs,
        meta={"heads": heads, "seq_q": seq_q, "seq_k": seq_k, "head_dim": d, "causal": causal,
              **({"padding_keys": int(sum(padded))} if key_mask is not None else {}),
              "scale": float(scale), "mult": consts.mult, "shift": consts.shift,
              "delta": consts.delta, "macs": heads * seq_q * seq_k * d * 2,
              "mxm_busy_cycles": n_abc[0]})
