"""all-MiniLM-L6-v2 float: the numpy encoder equals onnxruntime on the ONNX graph, and the
model behaves as published (paraphrases closer than unrelated sentences)."""

import numpy as np
import pytest

from openlpu.host.models import minilm
from openlpu.verification.models import minilm_float as mf

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "A man is riding a horse.", "Hi!",
             "Scientists have discovered a new species of frog in the rainforests of "
             "South America."]


@pytest.fixture(scope="module")
def onnx_model(model):
    from openlpu.host.models import minilm_onnx
    return minilm_onnx.build_encoder_onnx(model)


def test_graph_is_standard_onnx(onnx_model):
    from openlpu.host.models import minilm_onnx
    ops = {n.op_type for n in onnx_model.graph.node}
    assert {"MatMul", "Add", "LayerNormalization", "Erf", "Softmax", "Reshape",
            "Transpose"} <= ops
    assert onnx_model.opset_import[0].version == minilm_onnx.OPSET >= 17
    assert [i.name for i in onnx_model.graph.input] == ["hidden", "mask_bias"]
    assert sum(n.op_type == "LayerNormalization" for n in onnx_model.graph.node) == 12


def test_numpy_float_equals_onnxruntime_with_padding(model, onnx_model):
    from openlpu.host.models import minilm_onnx
    ids, mask = model.tokenize(SENTENCES, length=24)       # every sentence padded
    assert (mask.sum(1) < 24).all()
    h = model.embed(ids)
    y_np = mf.encoder(model, h, mask)
    y_ort = minilm_onnx.run_onnxruntime(onnx_model, h, minilm.attention_bias(mask))
    assert y_np.shape == y_ort.shape == (len(SENTENCES), 24, 384)
    assert np.abs(y_np - y_ort).max() < 1e-4


def test_padding_does_not_change_embeddings(model):
    e1 = mf.embed_sentences(model, SENTENCES)
    e2 = mf.embed_sentences(model, SENTENCES, length=40)
    assert np.abs(e1 - e2).max() < 1e-5


def test_known_similarities(model):
    e = mf.embed_sentences(model, SENTENCES[:3])
    sim = e @ e.T
    # paraphrase pair far above the unrelated pair (0.755 and 0.247 for the published model)
    assert sim[0, 1] > 0.7 and sim[0, 2] < 0.35 and sim[1, 2] < 0.35
    assert abs(sim[0, 1] - 0.7553) < 2e-3


def test_onnx_intermediates_match_numpy(model):
    from openlpu.host.models import minilm_onnx
    ids, mask = model.tokenize(SENTENCES[:2])
    h = model.embed(ids)
    g = minilm_onnx.build_encoder_onnx(model, layers=2, intermediates=True)
    res = minilm_onnx.run_onnxruntime(g, h, minilm.attention_bias(mask), outputs=None)
    traces = []
    x = mf.encoder_layer(h, mf.mask_bias(mask), model.layer(0), 12, 1e-12, {})
    mf.encoder(model, h, mask, traces)
    keep = mask.astype(bool)
    for name in minilm_onnx.INTERMEDIATES:
        assert np.abs(res[f"l1.{name}"][keep] - traces[1][name][keep]).max() < 1e-3, name
    assert np.abs(res["l0.out"] - x).max() < 1e-4
    with pytest.raises(ValueError, match="layers must be in 1..6"):
        minilm_onnx.build_encoder_onnx(model, layers=7)


def test_gelu_is_the_erf_form():
    import math
    x = np.linspace(-6, 6, 241)
    ref = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.abs(mf.gelu(x) - ref).max() < 1e-6
