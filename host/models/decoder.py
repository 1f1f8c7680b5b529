"""A small decoder-only transformer for OpenLPU: task, tokenizer, weights and host-side steps.

The model (trained by ``host/models/train_decoder.py``, weights in ``host/models/data/``) uses
only operations the chip's existing kernels run, with int8 activations between them:

* embedding: ``x0 = sat8(tok_q[token] + pos_q[position])`` (int8 tables at the residual scale,
  learned absolute positions), done on the host (:meth:`DecoderWeights.embed`);
* per layer (pre-norm): ``RMSNorm`` (``firmware/norm.py``) -> three matmuls with a requantize
  epilogue (``Q``, ``K``, ``V``) -> causal attention per head of 32 (``firmware/attention.py``)
  -> matmul + requantize to the residual scale -> saturating int8 residual add -> ``RMSNorm``
  -> matmul + requantize + ReLU (``d_ff`` = 4 ``d_model``) -> matmul + requantize to the
  residual scale -> saturating residual add;
* final ``RMSNorm`` -> matmul to int32 logits (no epilogue) -> greedy argmax on the host
  (:func:`argmax_token`).

Every activation is int8 with one real scale per tensor (calibrated, stored in the weight file);
every weight matrix is int8 with one scale per tensor, because the matmul epilogue multiplies
by one int32 constant per matmul (``VREQ`` with the multiplier in an ALU's constant register).
:meth:`DecoderWeights.int_consts` turns the scales into the kernels' integer constants
(``rmsnorm_consts``, ``attention_consts``, requantize ``(multiplier, shift)``).

The task (:class:`ReverseTask`): reverse a string of 4..24 decimal digits. A prompt is
``^ d1 .. dn =``; the answer is ``dn .. d1 $`` (``$`` ends it). An answer is correct when the
greedy continuation equals it exactly.

numpy only: no torch at run time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openlpu.firmware.attention import AttentionConsts, attention_consts
from openlpu.firmware.norm import RmsNormConsts, rmsnorm_consts
from openlpu.firmware.vxmconst import q31_normalise

__all__ = ["DecoderConfig", "Tokenizer", "ReverseTask", "DecoderWeights", "DecoderIntConsts",
           "LayerIntConsts", "requant_params", "argmax_token", "load_weights", "DATA_DIR",
           "INT8_FILE", "FLOAT_FILE", "RMS_EPS"]

DATA_DIR = Path(__file__).resolve().parent / "data"
INT8_FILE = DATA_DIR / "decoder_int8.npz"
FLOAT_FILE = DATA_DIR / "decoder_float.npz"
RMS_EPS = 1e-5          # RMSNorm epsilon (real units), float and integer models alike


@dataclass(frozen=True)
class DecoderConfig:
    """Architecture: ``n_layers`` pre-norm blocks of ``n_heads`` causal heads of ``head_dim``."""
    vocab: int = 14
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    n_layers: int = 2
    context: int = 128

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def check(self) -> None:
        """Raise ValueError naming a dimension the chip's kernels cannot take."""
        if self.d_model % 64:
            raise ValueError(f"d_model {self.d_model} must be a multiple of 64 (VL of 'base')")
        if self.d_model % self.n_heads or self.head_dim not in (16, 32, 64):
            raise ValueError(f"d_model {self.d_model} / n_heads {self.n_heads} must give a head "
                             f"dim of 16, 32 or 64")
        for name in ("vocab", "d_ff", "n_layers", "context"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")


class Tokenizer:
    """Characters ``0``-``9``, ``=`` (end of the digits), ``^`` (start), ``$`` (end of the
    answer) and ``_`` (padding, never predicted) as token ids 0..13."""
    CHARS = "0123456789=^$_"
    EQ, BOS, EOS, PAD = 10, 11, 12, 13

    def encode(self, text: str) -> list:
        try:
            return [self.CHARS.index(c) for c in text]
        except ValueError:
            bad = next(c for c in text if c not in self.CHARS)
            raise ValueError(f"character {bad!r} is not in the decoder's vocabulary "
                             f"{self.CHARS!r}") from None

    def decode(self, ids) -> str:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.CHARS):
                raise ValueError(f"token id {i} is outside the vocabulary (0..{len(self.CHARS) - 1})")
            out.append(self.CHARS[i])
        return "".join(out)


class ReverseTask:
    """Digit-string reversal with a fixed seed.

    ``heldout(n)`` gives ``n`` distinct held-out prompts (seed ``HELDOUT_SEED``); ``batch`` draws
    training examples from ``rng`` and never returns a held-out digit string.
    """
    MIN_DIGITS, MAX_DIGITS = 4, 24
    HELDOUT_SEED = 20261203
    HELDOUT_N = 500

    def __init__(self):
        self.tok = Tokenizer()
        self._heldout = self._make_heldout(self.HELDOUT_N)
        self._held_set = {d for d, _ in self._heldout}

    def _digits(self, rng) -> str:
        n = int(rng.integers(self.MIN_DIGITS, self.MAX_DIGITS + 1))
        return "".join(str(d) for d in rng.integers(0, 10, n))

    def _make_heldout(self, n):
        rng = np.random.default_rng(self.HELDOUT_SEED)
        seen, out = set(), []
        while len(out) < n:
            d = self._digits(rng)
            if d not in seen:
                seen.add(d)
                out.append((d, d[::-1]))
        return out

    def prompt_ids(self, digits: str) -> list:
        return self.tok.encode("^" + digits + "=")

    def answer_ids(self, digits: str) -> list:
        return self.tok.encode(digits[::-1] + "$")

    def heldout(self, n: int | None = None) -> list:
        """``[(prompt ids, answer ids)]``, the first ``n`` (default all) held-out prompts."""
        n = self.HELDOUT_N if n is None else n
        if not 0 < n <= self.HELDOUT_N:
            raise ValueError(f"held-out set has {self.HELDOUT_N} prompts, asked for {n}")
        return [(self.prompt_ids(d), self.answer_ids(d)) for d, _ in self._heldout[:n]]

    def batch(self, rng, size: int):
        """``(tokens, targets, mask)``, int64 (size, T): ``targets[:, t]`` is the token after
        ``tokens[:, t]``; ``mask`` is 1 where the target is an answer token (the loss)."""
        seqs, starts = [], []
        while len(seqs) < size:
            d = self._digits(rng)
            if d in self._held_set:
                continue
            p, a = self.prompt_ids(d), self.answer_ids(d)
            seqs.append(p + a)
            starts.append(len(p))
        T = max(len(s) for s in seqs) - 1
        tokens = np.full((size, T), Tokenizer.PAD, dtype=np.int64)
        targets = np.full((size, T), Tokenizer.PAD, dtype=np.int64)
        mask = np.zeros((size, T), dtype=np.int64)
        for i, (s, st) in enumerate(zip(seqs, starts)):
            n = len(s) - 1
            tokens[i, :n] = s[:-1]
            targets[i, :n] = s[1:]
            mask[i, st - 1:n] = 1
        return tokens, targets, mask


def argmax_token(logits) -> int:
    """Greedy choice on the host: the index of the largest logit (the lowest index on a tie),
    from int32 (integer model) or float logits of one position."""
    logits = np.asarray(logits)
    if logits.ndim != 1:
        raise ValueError(f"argmax_token takes one position's logits, not shape {logits.shape}")
    return int(np.argmax(logits))


def requant_params(real: float, what: str) -> tuple:
    """``(multiplier, shift)`` of ``vxm_ops.requantize`` for the real factor ``real``
    (``multiplier / 2**(31 + shift)``, multiplier in [2**30, 2**31), shift 0..31). Raises
    ValueError naming ``what`` when the factor is not in the epilogue's range
    (2**-62 .. just below 1)."""
    mult, sh = q31_normalise(float(real), what)
    shift = sh - 31
    if not 0 <= shift <= 31:
        raise ValueError(f"{what}: requantize factor {real!r} is outside the epilogue's range "
                         f"[2**-62, 1)")
    return mult, shift


@dataclass(frozen=True)
class LayerIntConsts:
    """Integer constants of one block: norms, requantize ``(mult, shift)`` per matmul, and the
    attention score constants."""
    norm1: RmsNormConsts
    rq_q: tuple
    rq_k: tuple
    rq_v: tuple
    attn: AttentionConsts
    rq_o: tuple
    norm2: RmsNormConsts
    rq_ff1: tuple
    rq_ff2: tuple


@dataclass(frozen=True)
class DecoderIntConsts:
    layers: tuple
    norm_f: RmsNormConsts


MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2")


class DecoderWeights:
    """The committed weights: ``float`` (dict of float64 arrays, for the float model), ``q``
    (int8 tensors as int64 arrays), ``w_scale`` (real scale of each int8 weight tensor),
    ``act`` (calibrated real scale of each int8 activation) and ``check`` (torch's float logits
    on fixed sequences, written by the training script).

    Names: ``tok`` (vocab x d), ``pos`` (context x d), per layer ``l{i}.g1``, ``l{i}.wq``,
    ``wk``, ``wv``, ``wo`` (d x d, used as ``h @ W``), ``l{i}.g2``, ``l{i}.w1`` (d x d_ff),
    ``l{i}.w2`` (d_ff x d), then ``gf`` and ``wout`` (d x vocab). Activation scales: ``res``
    (residual stream, embedding tables, attention and FFN branch outputs), per layer ``n1``,
    ``q``, ``k``, ``v`` (also the attention output's), ``n2``, ``u`` (FFN hidden), and ``nf``.
    """

    def __init__(self, cfg: DecoderConfig, float_w: dict, q: dict, w_scale: dict, act: dict,
                 check: dict | None = None):
        cfg.check()
        self.cfg, self.float, self.q, self.w_scale, self.act = cfg, float_w, q, w_scale, act
        self.check = check or {}
        self._consts = None

    # -- host-side steps --------------------------------------------------------------------
    def embed(self, tokens, start: int = 0) -> np.ndarray:
        """int8 ``x0`` (n x d) of ``tokens`` at positions ``start ..``: the saturating sum of
        the int8 token and position rows (both at the residual scale ``act['res']``)."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        n = tokens.size
        if n == 0:
            raise ValueError("embed needs at least one token")
        if tokens.min() < 0 or tokens.max() >= self.cfg.vocab:
            raise ValueError(f"token ids must be in 0..{self.cfg.vocab - 1}")
        if start < 0 or start + n > self.cfg.context:
            raise ValueError(f"positions {start}..{start + n - 1} exceed the context of "
                             f"{self.cfg.context}")
        x = self.q["tok"][tokens] + self.q["pos"][start:start + n]
        return np.clip(x, -128, 127)

    def embed_float(self, tokens, start: int = 0) -> np.ndarray:
        """float ``x0`` of the float model (same checks as :meth:`embed`)."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        self.embed(tokens, start)           # the checks
        return self.float["tok"][tokens] + self.float["pos"][start:start + tokens.size]

    # -- integer constants ------------------------------------------------------------------
    def int_consts(self) -> DecoderIntConsts:
        """The kernels' constants for every norm, matmul epilogue and attention (cached)."""
        if self._consts is not None:
            return self._consts
        c, a, ws = self.cfg, self.act, self.w_scale
        d = c.d_model

        def rq(w, s_in, s_out, name):
            return requant_params(s_in * ws[w] / s_out, f"requantize of {name}")

        layers = []
        for i in range(c.n_layers):
            p = f"l{i}."
            n1 = rmsnorm_consts(d, self.float[p + "g1"], RMS_EPS, a["res"], a[p + "n1"])
            n2 = rmsnorm_consts(d, self.float[p + "g2"], RMS_EPS, a["res"], a[p + "n2"])
            att = attention_consts(a[p + "q"] * a[p + "k"] / math.sqrt(c.head_dim))
            layers.append(LayerIntConsts(
                norm1=n1,
                rq_q=rq(p + "wq", a[p + "n1"], a[p + "q"], p + "wq"),
                rq_k=rq(p + "wk", a[p + "n1"], a[p + "k"], p + "wk"),
                rq_v=rq(p + "wv", a[p + "n1"], a[p + "v"], p + "wv"),
                attn=att,
                rq_o=rq(p + "wo", a[p + "v"], a["res"], p + "wo"),
                norm2=n2,
                rq_ff1=rq(p + "w1", a[p + "n2"], a[p + "u"], p + "w1"),
                rq_ff2=rq(p + "w2", a[p + "u"], a["res"], p + "w2")))
        nf = rmsnorm_consts(d, self.float["gf"], RMS_EPS, a["res"], a["nf"])
        self._consts = DecoderIntConsts(tuple(layers), nf)
        return self._consts

    def logit_scale(self) -> float:
        """Real value of one unit of the int32 logits."""
        return self.act["nf"] * self.w_scale["wout"]

    # -- files ------------------------------------------------------------------------------
    def save(self, int8_path=INT8_FILE, float_path=FLOAT_FILE) -> None:
        """Write the int8 file (int8 tensors, scales, config, check data) and the float file."""
        meta = json.dumps({"config": self.cfg.__dict__, "w_scale": self.w_scale,
                           "act": self.act})
        arrs = {f"q.{k}": np.asarray(v, dtype=np.int8) for k, v in self.q.items()}
        arrs.update({f"check.{k}": np.asarray(v) for k, v in self.check.items()})
        # the norms' gammas are real: rmsnorm_consts quantizes them when the kernel is compiled
        arrs.update({f"g.{k}": np.asarray(v, dtype=np.float32) for k, v in self.float.items()
                     if _is_gamma(k)})
        np.savez_compressed(int8_path, meta=np.array(meta), **arrs)
        np.savez_compressed(float_path, meta=np.array(meta),
                            **{f"f.{k}": np.asarray(v, dtype=np.float32)
                               for k, v in self.float.items()})


def _is_gamma(name: str) -> bool:
    return name == "gf" or name.endswith(".g1") or name.endswith(".g2")


def load_weights(int8_path=INT8_FILE, float_path=FLOAT_FILE) -> DecoderWeights:
    """Load the committed weight files (numpy only). ``float_path=None`` loads the int8 file
    alone (the float model is then unavailable: ``weights.float`` holds only the gammas)."""
    with np.load(int8_path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        q = {k[2:]: z[k].astype(np.int64) for k in z.files if k.startswith("q.")}
        check = {k[6:]: z[k] for k in z.files if k.startswith("check.")}
        gam = {k[2:]: z[k].astype(np.float64) for k in z.files if k.startswith("g.")}
    cfg = DecoderConfig(**meta["config"])
    fw = dict(gam)
    if float_path is not None:
        with np.load(float_path, allow_pickle=False) as z:
            fw.update({k[2:]: z[k].astype(np.float64) for k in z.files if k.startswith("f.")})
    missing = [k for k in _tensor_names(cfg) if k not in q]
    if missing:
        raise ValueError(f"{int8_path}: int8 tensors missing: {missing}")
    return DecoderWeights(cfg, fw, q, {k: float(v) for k, v in meta["w_scale"].items()},
                          {k: float(v) for k, v in meta["act"].items()}, check)


def _tensor_names(cfg: DecoderConfig) -> list:
    names = ["tok", "pos", "wout"]
    for i in range(cfg.n_layers):
        names += [f"l{i}.{m}" for m in MATRICES]
    return names
