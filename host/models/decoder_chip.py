"""The decoder (``host/models/decoder.py``) generating tokens on the chip: prefill and decode.

Every step of the integer model runs on a :class:`~openlpu.host.device.Device` as a program
package compiled once for preset ``base`` (or any preset the kernels fit) and cached by shape:

========================  ===================================================================
program (per layer)       kernels on one :class:`~openlpu.firmware.chipstate.ChipState`
========================  ===================================================================
``norm1`` / ``norm2``     ``emit_rmsnorm`` (``firmware/norm.py``)
``qkv``                   three ``emit_matmul`` with the requantize epilogue, Q first; K and V
                          read the same ``h`` (``inputs=(h, None)``) where Q's matmul put it
``attn@<keys>``           ``emit_attention`` of the rows against ``keys`` cached K/V rows,
                          4 heads, causal (one program per key count, compiled on first use)
``wo_res``                ``emit_matmul`` (requantize) then the saturating residual add
                          (:data:`SAT_ADD`: seven ``emit_elementwise`` ops chained by
                          ``inputs=``; ``emit_copy`` moves an operand that shares a MEM slice
                          with the other) on its result
``ffn_res``               ``emit_matmul`` (requantize + ReLU) -> ``emit_matmul`` reading its
                          int8 result in place -> the saturating residual add
========================  ===================================================================

then ``normf`` and ``logits`` (``emit_matmul`` to int32, no epilogue). A program is specific
to its row count (``P`` for the prefill of a ``P``-token prompt, 1 for a decode step) and the
attention program also to its key count: the ISA has no indirect addressing and the attention
kernel's memory map places ``K`` as ``heads x keys`` rows, so one program per position is
compiled once and reused (:class:`DecoderPrograms` caches them; a generation of ``N`` tokens
after a prompt of ``P`` compiles at most ``N`` attention programs, later generations none).

What is *not* on the chip: the embedding lookup (host, :meth:`DecoderWeights.embed`, as in the
integer model), the greedy argmax (host, :func:`argmax_token` of the int32 logits read back)
and the K/V cache and the activations between programs: the host keeps them and writes each
program's inputs. ``emit_rmsnorm`` and ``emit_attention`` use fixed MEM words (the same words
for every layer: both layers' caches cannot sit where the attention kernel reads them), so the
cache is not resident in MEM; see ``docs/models.md``.

Timing: a step's cycles are the sum of its programs' cycles (each run from its own START to
its HALT, exactly :attr:`Package.predicted_cycles`); the host's writes and reads in between are
not chip cycles. The saturating add is spelled out here with the chip's op names; the integer
reference (``verification/models/decoder_ref.py``, ``SAT_ADD_OPS``) defines the same sequence
and the tests check the logits and tokens against it in every element.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from openlpu.firmware.attention import emit_attention
from openlpu.firmware.chipstate import ChipState
from openlpu.firmware.compiler import emit_elementwise, emit_matmul
from openlpu.firmware.graph.kernels import emit_copy
from openlpu.firmware.norm import emit_rmsnorm
from openlpu.host.models.decoder import RMS_EPS, DecoderWeights, Tokenizer, argmax_token
from openlpu.params import preset

__all__ = ["DecoderPrograms", "ChipGeneration", "generate", "SAT_ADD", "weight_bytes_per_token"]

#: The saturating int8 add ``y = sat8(a + b)`` as the chip's elementwise ops (the VXM's int8
#: ADD wraps): ``(dst, op, x, y)``; ``C127`` / ``CM128`` are constant tensors of 127 / -128.
SAT_ADD = (
    ("r", "RELU", "b", None),
    ("m", "SUB", "b", "r"),
    ("hi", "SUB", "C127", "r"),
    ("lo", "SUB", "CM128", "m"),
    ("t1", "MIN", "a", "hi"),
    ("t2", "MAX", "t1", "lo"),
    ("y", "ADD", "t2", "b"),
)


def _emit_sat_add(st: ChipState, R: int, C: int, prefix: str, a_desc, b_desc, earliest: int):
    """Emit :data:`SAT_ADD` on ``st``; ``a_desc`` / ``b_desc``: layouts already in MEM or
    ``None`` (then the tensor is a program input named ``{prefix}a`` / ``{prefix}b``).
    Returns ``(end, y layout, new input layouts)``."""
    env = {"a": a_desc, "b": b_desc}
    new_inputs = []
    t = earliest
    for dst, op, x, y in SAT_ADD:
        ins = (env.get(x), env.get(y)) if y is not None else (env.get(x), None)
        if ins[0] is not None and ins[1] is not None:
            s0 = {sl for sl, *_ in ins[0].layout[0]}
            if s0 & {sl for sl, *_ in ins[1].layout[0]}:
                # one MEM slice's read queue cannot feed both operands in one cycle
                cp = emit_copy(st, ins[1], f"{ins[1].name}@{prefix}{dst}", earliest=t,
                               avoid_slices=s0)
                t = cp.end
                ins = (ins[0], cp.outputs[0])
        names = (prefix + x, prefix + (y or "_"), prefix + dst)
        out = emit_elementwise(st, op, R, C, earliest=t, names=names, inputs=ins)
        t = out.end
        for i, nm in enumerate((x, y)):
            if nm is not None and env.get(nm) is None:
                env[nm] = out.inputs[i]
                new_inputs.append(out.inputs[i])
        env[dst] = out.outputs[0]
    return t, env["y"], new_inputs


@dataclass
class _Prog:
    pkg: object
    const_inputs: dict = field(default_factory=dict)     # input name -> array the host writes


class DecoderPrograms:
    """The decoder's program packages for ``params`` (default preset ``base``), compiled on
    first use and cached by ``(program, rows, keys)``. :meth:`get` returns one."""

    def __init__(self, weights: DecoderWeights, params=None):
        self.w = weights
        self.params = params if params is not None else preset("base")
        self.cfg = weights.cfg
        self.consts = weights.int_consts()
        self._cache: dict = {}

    def __len__(self):
        return len(self._cache)

    def get(self, kind: str, layer: int, rows: int, keys: int = 0) -> _Prog:
        """The program ``kind`` (``norm1``, ``qkv``, ``attn``, ``wo_res``, ``norm2``,
        ``ffn_res``, ``normf``, ``logits``) of ``layer`` for ``rows`` rows (and ``keys``
        cached K/V rows for ``attn``)."""
        key = (kind, layer, rows, keys if kind == "attn" else 0)
        prog = self._cache.get(key)
        if prog is None:
            prog = self._cache[key] = self._compile(kind, layer, rows, keys)
        return prog

    def _compile(self, kind, layer, rows, keys) -> _Prog:
        P, w, c, a, cfg = self.params, self.w, self.consts, self.w.act, self.cfg
        d, pre = cfg.d_model, f"l{layer}."
        name = f"decoder_{pre if kind != 'normf' and kind != 'logits' else ''}{kind}_{rows}"
        st = ChipState(P, f"decoder {kind} (layer {layer}, {rows} rows) on preset {P.name!r}")
        consts: dict = {}
        if kind in ("norm1", "norm2", "normf"):
            g, s_out = {"norm1": (pre + "g1", pre + "n1"), "norm2": (pre + "g2", pre + "n2"),
                        "normf": ("gf", "nf")}[kind]
            out = emit_rmsnorm(st, rows, d, gamma=w.float[g], eps=RMS_EPS, in_scale=a["res"],
                               out_scale=a[s_out])
            ins, outs = out.inputs, out.outputs
        elif kind == "qkv":
            lc = c.layers[layer]
            q = emit_matmul(st, rows, d, d, requantize=lc.rq_q, names=("H", "WQ", "Q"))
            h = q.inputs[0]
            k = emit_matmul(st, rows, d, d, requantize=lc.rq_k, names=("H", "WK", "K"),
                            inputs=(h, None), earliest=q.end)
            v = emit_matmul(st, rows, d, d, requantize=lc.rq_v, names=("H", "WV", "V"),
                            inputs=(h, None), earliest=k.end)
            ins = [h, q.inputs[1], k.inputs[1], v.inputs[1]]
            outs = [q.outputs[0], k.outputs[0], v.outputs[0]]
            consts = {"WQ": w.q[pre + "wq"], "WK": w.q[pre + "wk"], "WV": w.q[pre + "wv"]}
        elif kind == "attn":
            dh = cfg.head_dim
            out = emit_attention(st, rows, keys, dh, heads=cfg.n_heads, causal=True,
                                 scale=a[pre + "q"] * a[pre + "k"] / math.sqrt(dh))
            ins, outs = out.inputs, out.outputs
            name = f"decoder_{pre}attn_{rows}x{keys}"
        elif kind == "wo_res":
            lc = c.layers[layer]
            o = emit_matmul(st, rows, d, d, requantize=lc.rq_o, names=("O", "WO", "A"))
            _, y, extra = _emit_sat_add(st, rows, d, "res.", o.outputs[0], None, o.end)
            ins = list(o.inputs) + extra
            outs = [y]
            consts = {"WO": w.q[pre + "wo"]}
        elif kind == "ffn_res":
            lc = c.layers[layer]
            u = emit_matmul(st, rows, d, cfg.d_ff, requantize=lc.rq_ff1, relu=True,
                            names=("H2", "W1", "U"))
            f = emit_matmul(st, rows, cfg.d_ff, d, requantize=lc.rq_ff2, names=("U", "W2", "F"),
                            inputs=(u.outputs[0], None), earliest=u.end)
            _, y, extra = _emit_sat_add(st, rows, d, "res.", f.outputs[0], None, f.end)
            ins = [u.inputs[0], u.inputs[1], f.inputs[1]] + extra
            outs = [y]
            consts = {"W1": w.q[pre + "w1"], "W2": w.q[pre + "w2"]}
        elif kind == "logits":
            out = emit_matmul(st, rows, d, cfg.vocab, names=("HF", "WOUT", "LOGITS"))
            ins, outs = out.inputs, out.outputs
            consts = {"WOUT": w.q["wout"]}
        else:
            raise ValueError(f"unknown decoder program {kind!r}")
        for t in ins:
            if t.name.endswith("C127"):
                consts[t.name] = np.full((rows, d), 127, dtype=np.int64)
            elif t.name.endswith("CM128"):
                consts[t.name] = np.full((rows, d), -128, dtype=np.int64)
        pkg = st.package(name=name, inputs=ins, outputs=outs,
                         meta={"program": kind, "layer": layer, "rows": rows, "keys": keys})
        return _Prog(pkg, consts)


def weight_bytes_per_token(cfg) -> int:
    """int8 weight bytes one decode step streams into the MXM (every matrix once)."""
    d = cfg.d_model
    return cfg.n_layers * (4 * d * d + 2 * d * cfg.d_ff) + d * cfg.vocab


@dataclass
class ChipGeneration:
    """What :func:`generate` returns: the generated ``tokens``, the int32 ``logits`` each was
    chosen from (one row per token), and per step (the prefill, then each decode step) the
    measured and predicted ``cycles`` (sums over the step's programs), the program count and
    ``detail``: per step, ``(package name, measured cycles)`` of each program in run order."""
    tokens: list
    logits: np.ndarray
    cycles: list            # measured, per step
    predicted: list         # predicted, per step
    programs: list          # programs run, per step
    detail: list = field(default_factory=list)


class _Runner:
    def __init__(self, dev, progs: DecoderPrograms):
        self.dev, self.progs = dev, progs
        self.cycles = self.predicted = self.count = 0
        self.detail = []

    def run(self, kind, layer, rows, inputs, keys=0):
        prog = self.progs.get(kind, layer, rows, keys)
        cyc, out = self.dev.run_package(prog.pkg, {**prog.const_inputs, **inputs})
        self.cycles += cyc
        self.predicted += prog.pkg.predicted_cycles
        self.count += 1
        self.detail.append((prog.pkg.name, cyc))
        return out


def _forward(r: _Runner, w: DecoderWeights, x: np.ndarray, cache_k: list, cache_v: list):
    """Run the rows ``x`` (int8 embedding) through the model on the chip; the cache lists (one
    int8 array per layer, positions x d_model) grow by the rows' K and V. Returns int32
    logits (rows x vocab)."""
    cfg = w.cfg
    n, dh = x.shape[0], cfg.head_dim
    for i in range(cfg.n_layers):
        h = r.run("norm1", i, n, {"X": x})["Y"]
        o = r.run("qkv", i, n, {"H": h})
        q, k, v = o["Q"], o["K"], o["V"]
        cache_k[i] = k if cache_k[i] is None else np.concatenate([cache_k[i], k])
        cache_v[i] = v if cache_v[i] is None else np.concatenate([cache_v[i], v])
        K, V = cache_k[i], cache_v[i]
        ins = {}
        for hd in range(cfg.n_heads):
            s = slice(hd * dh, (hd + 1) * dh)
            ins.update({f"Q{hd}": q[:, s], f"K{hd}": K[:, s], f"V{hd}": V[:, s]})
        ao = r.run("attn", i, n, ins, keys=K.shape[0])
        att = np.concatenate([ao[f"O{hd}"] for hd in range(cfg.n_heads)], axis=1)
        x1 = r.run("wo_res", i, n, {"O": att, "res.b": x})["res.y"]
        h2 = r.run("norm2", i, n, {"X": x1})["Y"]
        x = r.run("ffn_res", i, n, {"H2": h2, "res.b": x1})["res.y"]
    hf = r.run("normf", 0, n, {"X": x})["Y"]
    return r.run("logits", 0, n, {"HF": hf})["LOGITS"]


def generate(dev, weights: DecoderWeights, prompt, n_tokens: int, *, stop: bool = False,
             programs: DecoderPrograms | None = None, on_token=None) -> ChipGeneration:
    """Greedy generation on ``dev``: the prefill of ``prompt`` (token ids), then one decode
    step per further token, ``n_tokens`` tokens in all (fewer when ``stop`` and ``$`` comes).
    The argmax of each step's int32 logits runs on the host. ``programs`` (built for
    ``dev.params`` when not given) may be shared between calls so nothing is compiled twice;
    ``on_token(index, token, step cycles)`` is called as each token is chosen.

    Raises ValueError for an empty prompt, a token id outside the vocabulary, ``n_tokens`` < 1
    or a prompt + generation longer than the context."""
    cfg = weights.cfg
    prompt = [int(t) for t in np.asarray(prompt, dtype=np.int64).reshape(-1)]
    if not prompt:
        raise ValueError("the prompt needs at least one token")
    bad = [t for t in prompt if not 0 <= t < cfg.vocab]
    if bad:
        raise ValueError(f"prompt token {bad[0]} is outside the vocabulary (0..{cfg.vocab - 1})")
    if not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive integer, not {n_tokens!r}")
    if len(prompt) + n_tokens - 1 > cfg.context:
        raise ValueError(f"prompt of {len(prompt)} tokens + {n_tokens} generated exceeds the "
                         f"context of {cfg.context} positions")
    progs = programs if programs is not None else DecoderPrograms(weights, dev.params)
    if progs.params.config_id != dev.params.config_id:
        raise ValueError(f"programs built for preset {progs.params.name!r}, device runs "
                         f"{dev.params.name!r}")
    cache_k = [None] * cfg.n_layers
    cache_v = [None] * cfg.n_layers
    tokens, logits, cycles, predicted, counts, detail = [], [], [], [], [], []
    x = weights.embed(prompt, 0)
    pos = len(prompt)
    while True:
        r = _Runner(dev, progs)
        lg = _forward(r, weights, x, cache_k, cache_v)
        last = np.asarray(lg[-1], dtype=np.int64)
        t = argmax_token(last)
        tokens.append(t)
        logits.append(last)
        cycles.append(r.cycles)
        predicted.append(r.predicted)
        counts.append(r.count)
        detail.append(r.detail)
        if on_token is not None:
            on_token(len(tokens) - 1, t, r.cycles)
        if len(tokens) == n_tokens or (stop and t == Tokenizer.EOS):
            break
        x = weights.embed([t], pos)
        pos += 1
    return ChipGeneration(tokens, np.array(logits), cycles, predicted, counts, detail)
