import dataclasses

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware.asm import AsmError, assemble, disassemble
from openlpu.params import preset

SOURCE = """
; copy one word across the chip
.queue mem_w0.read
    READ 5, s1, W
    NOP 3
    HALT
.queue mxm_w.compute
    ABC acc=3, stream=s1, dir=W, accumulate=1   # named fields
    HALT
.queue mxm_w.result
    ACC 2, g1, E
    HALT
"""


def test_assemble_encodes_fields_from_the_isa_table(params):
    out = assemble(SOURCE, params)
    read = isa.BY_MNEMONIC["READ"]
    assert out["mem_w0.read"][0] == read.encode(addr=5, stream=1, dir=isa.Dir.WEST)
    assert isa.decode(out["mem_w0.read"][1]) == (isa.BY_MNEMONIC["NOP"], {"count": 3})
    idef, f = isa.decode(out["mxm_w.compute"][0])
    assert idef.mnemonic == "ABC" and f == {"acc": 3, "stream": 1, "dir": 1, "accumulate": 1}
    idef, f = isa.decode(out["mxm_w.result"][0])
    assert idef.mnemonic == "ACC" and f == {"acc": 2, "group": 1, "dir": 0}


def test_disassemble_round_trips(params):
    out = assemble(SOURCE, params)
    assert assemble(disassemble(out), params) == out


def _random_valid(rng, p, role, idef, prev):
    """Random field values of ``idef`` that ``isa.check_instruction`` accepts on ``p``."""
    while True:
        f = {fld.name: int(rng.integers(fld.min, fld.max + 1)) for fld in idef.fields}
        for fld in idef.fields:        # most values of the wide fields are out of range: aim
            lim = isa.field_limit(p, isa.field_meaning(idef, fld.name))
            if lim and rng.random() < 0.9:
                f[fld.name] = int(rng.integers(0, lim[0]))
        if "dtype" in f:
            f["dtype"] = int(rng.integers(0, 3))
            f["a_stream"] = int(rng.integers(0, p.streams))
        if idef.mnemonic == "REPEAT":
            f["count"] = int(rng.integers(1, 4))
            f["stride"] = int(rng.integers(-1, 2))
        try:
            isa.check_instruction(p, role, idef, f, prev)
            return f
        except isa.IsaError:
            continue


def test_random_words_round_trip_through_text():
    p = preset("default")
    rng = np.random.default_rng(7)
    queues = {}
    for q in p.queues:
        words = []
        prev = None
        # control instructions last, so a REPEAT has an instruction before it
        for idef in sorted(isa.INSTRUCTIONS, key=lambda i: i.mnemonic in isa.CONTROL_MNEMONICS):
            if not isa.allowed(idef, q.role) or idef.mnemonic == "TRANSPOSE" and prev:
                continue
            f = _random_valid(rng, p, q.role, idef, prev)
            if idef.mnemonic not in isa.CONTROL_MNEMONICS:
                prev = (idef, f)
            words.append(idef.encode(**f))
        queues[q.name] = words
    assert assemble(disassemble(queues), p) == queues


@pytest.mark.parametrize("text, message", [
    ("READ 1, s0, W", r"line 1: instruction before any '\.queue'"),
    (".queue nowhere\nHALT", r"line 1: .*no instruction queue named 'nowhere'"),
    (".queue mem_w0.read\n  FOO 1", r"line 2: unknown instruction 'FOO'"),
    (".queue mem_w0.read\n  WRITE 1, s0, W", r"line 2: WRITE is not allowed in queue mem_w0.read"),
    (".queue mem_w0.read\n  READ 1, s0", r"line 2: READ takes 3 operand"),
    (".queue mem_w0.read\n\n  READ 1, s0, X", r"line 3: direction must be E or W"),
    (".queue mem_w0.read\n  READ 99999, s0, W", r"line 2: .*addr=99999 out of range"),
    (".queue mem_w0.read\n  READ 0, s31, W", r"line 2: .*stream=31 out of range for preset"),
    (".queue mem_w0.read\n  NOP 0", r"line 2: NOP: field count=0 out of range"),
    (".queue mxm_w.weights\n  LW 9999, s0, W", r"line 2: .*row=9999 out of range"),
    (".bogus", r"line 1: unknown directive"),
])
def test_errors_carry_line_numbers(params, text, message):
    with pytest.raises(AsmError, match=message):
        assemble(text, params)


def test_decode_rejects_unknown_opcodes_and_stray_bits():
    with pytest.raises(isa.IsaError, match="unknown opcode"):
        isa.decode(63)
    with pytest.raises(isa.IsaError, match="bits set above"):
        isa.decode(isa.BY_MNEMONIC["HALT"].encode() | (1 << 31))


# -- size options: instructions a chip lacks (isa.unavailable) -----------------------------------

LACKING = [   # (queue, line, instruction, option)
    ("mem_w0.read", "REPEAT 2, 1, 1", "REPEAT", "icu_repeat"),
    ("mxm_w.compute", "REPEAT count=1, interval=2, stride=1", "REPEAT", "icu_repeat"),
    ("mem_e0.read", "GATHER addr=3, map_stream=s1, map_dir=W, stream=s2, dir=E", "GATHER",
     "mem_gather"),
    ("mem_w1.write", "SCATTER addr=3, map_stream=s1, map_dir=W, stream=s2, dir=E", "SCATTER",
     "mem_gather"),
]


@pytest.mark.parametrize("name", ["ice40", "tiny_lite"])
@pytest.mark.parametrize("queue, line, mnemonic, option", LACKING)
def test_instructions_a_chip_lacks_are_rejected(name, queue, line, mnemonic, option):
    """REPEAT without ``icu_repeat``, GATHER / SCATTER without ``mem_gather``: an error naming
    the instruction, the preset and the option; the same text assembles on ``tiny``."""
    p = preset(name) if name == "ice40" else dataclasses.replace(
        preset("tiny"), icu_repeat=False, mem_gather=False, name=name)
    first = {"read": "READ 4, s0, E", "write": "WRITE 4, s0, E", "compute": "ABC 0, s0, E, 0"}
    text = f".queue {queue}\n  {first[queue.split('.')[1]]}\n  {line}\n  HALT"
    with pytest.raises(AsmError, match=rf"line 3: {mnemonic} is not implemented by preset "
                                       rf"'{name}' \({option}=False\)"):
        assemble(text, p)
    words = assemble(text, preset("tiny"))[queue]
    assert isa.decode(words[1])[0].mnemonic == mnemonic


def test_a_chip_with_one_option_keeps_the_other_instructions():
    no_rep = dataclasses.replace(preset("tiny"), icu_repeat=False, name="tiny_norep")
    no_gat = dataclasses.replace(preset("tiny"), mem_gather=False, name="tiny_nogather")
    assert isa.unavailable(no_rep) == {"REPEAT"}
    assert isa.unavailable(no_gat) == {"GATHER", "SCATTER"}
    assert isa.unavailable(preset("tiny")) == frozenset()
    gather = ".queue mem_e0.read\n  GATHER 3, s1, W, s2, E\n  HALT"
    repeat = ".queue mem_e0.read\n  READ 1, s0, W\n  REPEAT 2, 1, 1\n  HALT"
    assert assemble(gather, no_rep) == assemble(gather, preset("tiny"))
    assert assemble(repeat, no_gat) == assemble(repeat, preset("tiny"))
    with pytest.raises(AsmError, match="REPEAT is not implemented by preset 'tiny_norep'"):
        assemble(repeat, no_rep)
    with pytest.raises(AsmError, match="GATHER is not implemented by preset 'tiny_nogather'"):
        assemble(gather, no_gat)


# -- parsing: whitespace, empty operands, garbage ---------------------------------------------------

def test_tabs_separate_the_mnemonic_like_spaces(params):
    spaced = assemble(".queue mem_w0.read\n READ 5, s1, W\n REPEAT 2, 1, 1\n HALT", params)
    tabbed = assemble(".queue\tmem_w0.read\n\tREAD\t5,\ts1,\tW\n\tREPEAT\t2,1,1\t\n\tHALT\t",
                      params)
    assert tabbed == spaced
    assert assemble(".queue mem_w0.read\n  NOP\t\n  HALT", params)["mem_w0.read"][0] == \
        isa.BY_MNEMONIC["NOP"].encode(count=1)


@pytest.mark.parametrize("line, message", [
    ("READ 0,, s0, E", r"line 2: operand 2 is empty \(column 9\)"),      # columns from 1
    ("READ 0, s0, E,", r"line 2: operand 4 is empty \(column 16\)"),
    ("READ , 0, s0, E", r"line 2: operand 1 is empty \(column 7\)"),
    ("READ 0, s0,\t, E", r"line 2: operand 3 is empty"),
    ("READ addr=, stream=s0, dir=E", r"line 2: field addr has no value \(column 7\)"),
    ("READ,0, s0, E", r"line 2: 'READ,0,': a space or tab must separate the instruction from "
                      r"its operands"),
    ("READ 0, s0, E W", r"line 2: direction must be E or W, not 'E W'"),
    ("READ 0x, s0, E", r"line 2: field addr: '0x' is not a number"),
    ("READ \u0665, s0, E", r"line 2: field addr: '\u0665' is not a number"),    # Arabic 5
    ("READ 1_0, s0, E", r"line 2: field addr: '1_0' is not a number"),
])
def test_malformed_operands_are_errors_naming_line_and_operand(params, line, message):
    with pytest.raises(AsmError, match=message):
        assemble(f".queue mem_w0.read\n {line}\n HALT", params)


def test_garbage_lines_raise_only_asm_errors():
    """A few thousand seeded random lines (tokens of the syntax, random characters) in a queue:
    each assembles or raises AsmError, nothing else."""
    p = preset("mini")
    rng = np.random.default_rng(99)
    tokens = (list(isa.BY_MNEMONIC) + ["s0", "s7", "s31", "g1", "E", "W", "EAST", "0x1f", "-1",
              "99999", "1" * 5000, "=", ",", ",,", " ", "\t", "addr=", "stream=s1", ".queue",
              "mem_w0.read", ";", "#", "\u00e9", "\x00", "0b101", "0o7", "+3", "s", "g", "READ"])
    chars = " \t,=;#.-+0123456789abcdefsgxEWREADNOP\u0665\u00ff"
    ok = bad = 0
    for _ in range(3000):
        if rng.random() < 0.7:
            n = int(rng.integers(1, 8))
            line = " ".join(tokens[int(i)] for i in rng.integers(0, len(tokens), n))
        else:
            line = "".join(chars[int(i)] for i in rng.integers(0, len(chars), int(rng.integers(1, 30))))
        queue = p.queues[int(rng.integers(len(p.queues)))].name
        try:
            assemble(f".queue {queue}\n{line}\nHALT\n", p)
            ok += 1
        except AsmError:
            bad += 1
    assert bad > 2000 and ok > 0, (ok, bad)
