"""The decoder generating tokens on the chip (host/models/decoder_chip.py) against the bit-exact
integer reference (verification/models/decoder_ref.py), on the reference model of preset
``base``: the prefill of a held-out prompt and 8 decode steps give the reference's tokens and
int32 logits in every element, every program runs in its predicted cycles, and the programs are
compiled once per shape."""

import numpy as np
import pytest

from openlpu.host.cli import main
from openlpu.host.device import Device
from openlpu.host.models.decoder import ReverseTask, Tokenizer, load_weights
from openlpu.host.models.decoder_chip import (SAT_ADD, DecoderPrograms, generate,
                                              weight_bytes_per_token)
from openlpu.params import preset
from openlpu.verification.models.decoder_ref import SAT_ADD_OPS, int_generate

N_TOKENS = 9            # the prefill's token, then 8 decode steps


@pytest.fixture(scope="module")
def w():
    return load_weights(float_path=None)


@pytest.fixture(scope="module")
def progs(w):
    return DecoderPrograms(w, preset("base"))


def _short_prompt():
    """The shortest of the first 20 held-out prompts (the test's run time grows with it)."""
    return min((p for p, _ in ReverseTask().heldout(20)), key=len)


def test_the_residual_add_is_the_references_op_sequence():
    assert SAT_ADD == SAT_ADD_OPS[:4] + (("t1", "MIN", "a", "hi"), ("t2", "MAX", "t1", "lo"),
                                         ("y", "ADD", "t2", "b"))
    assert [op for _, op, *_ in SAT_ADD] == [op for _, op, *_ in SAT_ADD_OPS]


def test_prefill_and_decode_match_the_integer_reference(w, progs):
    prompt = _short_prompt()
    ref_tokens, ref_logits = int_generate(w, prompt, N_TOKENS, stop=False)
    seen = []
    with Device.open("model", progs.params) as dev:
        g = generate(dev, w, prompt, N_TOKENS, programs=progs,
                     on_token=lambda i, t, c: seen.append((i, t, c)))
    assert g.tokens == list(ref_tokens)
    assert g.logits.shape == ref_logits.shape == (N_TOKENS, w.cfg.vocab)
    np.testing.assert_array_equal(g.logits, ref_logits)
    assert g.cycles == g.predicted                     # every step: sum of exact programs
    assert seen == [(i, t, c) for i, (t, c) in enumerate(zip(g.tokens, g.cycles))]
    L = w.cfg.n_layers
    assert g.programs == [6 * L + 2] * N_TOKENS
    # compiled once: the prefill's programs for P rows, the decode programs for 1 row, one
    # attention program per (layer, key count)
    assert len(progs) == (6 * L + 2) + (5 * L + 2) + L * (N_TOKENS - 1)


def test_bad_input_is_named(w, progs):
    prompt = _short_prompt()
    with pytest.raises(ValueError, match="exceeds the context"):
        generate(None, w, [Tokenizer.BOS] * w.cfg.context, 2, programs=progs)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(None, w, prompt[:-1] + [w.cfg.vocab], 2, programs=progs)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(None, w, [-1], 2, programs=progs)
    with pytest.raises(ValueError, match="at least one token"):
        generate(None, w, [], 2, programs=progs)
    with pytest.raises(ValueError, match="n_tokens"):
        generate(None, w, prompt, 0, programs=progs)
    with pytest.raises(ValueError, match="unknown decoder program"):
        progs.get("softmax", 0, 1)


def test_weight_bytes_per_token(w):
    c = w.cfg
    total = sum(w.q[k].size for k in w.q if k not in ("tok", "pos"))
    assert weight_bytes_per_token(c) == total


def test_cli_generate(capsys):
    assert main(["generate", "--prompt", "1234", "--tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "token 1/2: '4'" in out and "token 2/2: '3'" in out
    assert "measured == predicted in every step: yes" in out
    assert "weight-streaming bound" in out
    assert out.strip().splitlines()[-1].startswith("integer reference: MATCH")


def test_cli_generate_user_errors(capsys):
    assert main(["generate", "--prompt", "12a4", "--tokens", "2"]) == 2
    assert "'a' is not in the decoder's vocabulary" in capsys.readouterr().err
    assert main(["generate", "--prompt", "1234", "--tokens", "0"]) == 2
    assert "--tokens must be at least 1" in capsys.readouterr().err
    assert main(["generate", "--prompt", "1" * 200, "--tokens", "2"]) == 2
    assert "exceeds the context" in capsys.readouterr().err
