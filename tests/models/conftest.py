"""Session fixtures of the MiniLM tests: the model, its calibration and quantization, loaded or
computed once. Every test using them skips, with the install command, when the ``models``
extra or the model wheel is not installed."""

import pytest


@pytest.fixture(scope="session")
def model():
    from openlpu.host.models import minilm
    try:
        for module in ("onnx", "onnxruntime"):       # the rest of the extra
            minilm._require(module)
        return minilm.load()
    except minilm.ModelUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def stats(model):
    from openlpu.host.models import minilm_quant as mq
    return mq.calibrate(model)


@pytest.fixture(scope="session")
def quant(model, stats):
    from openlpu.host.models import minilm_quant as mq
    return mq.quantize(model, stats)


@pytest.fixture(scope="session")
def eval_embeddings(model, quant):
    """(float, int) sentence embeddings of ``sentences.EVAL``, each sentence unpadded."""
    import numpy as np
    from openlpu.verification.models import minilm_float as mf, minilm_int as mi
    from openlpu.verification.models.sentences import EVAL
    ef = np.concatenate([mf.embed_sentences(model, [s]) for s in EVAL])
    ei = np.concatenate([mi.embed_sentences_int(model, quant, [s]) for s in EVAL])
    return ef, ei
