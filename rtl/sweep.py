"""Instruction sweep: moves one queue's instructions north through the superlanes, with CONFIG.

An instruction issued at cycle ``t`` executes in superlane ``c`` at ``t + c``. A slice whose
queues obey ``CONFIG mask`` (``CONFIG_SLICE_KINDS``) takes each queue's issue port through an
:class:`InstructionSweep`, which delays the instruction by one register per superlane and tells
each superlane whether it is enabled for it.

How CONFIG travels: the ICU of such a queue forwards ``CONFIG`` words to the slice like any other
instruction (and issues ``CONFIG`` with every bit set in the START cycle, so every run starts with
all superlanes enabled). The sweep keeps the queue's current mask in a register updated by a
``CONFIG`` at superlane 0; every other instruction takes that mask with it up the superlanes, and
superlane ``c`` executes it only if bit ``c`` of its mask is set (bits beyond the ``mask`` field's
16 bits read as 0). A ``CONFIG`` issued at ``t`` therefore applies to the instructions the queue
issues from ``t + 1`` on, in every superlane, exactly like the reference model.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from openlpu import isa

from .common import issue_signature

__all__ = ["CONFIG_SLICE_KINDS", "InstructionSweep", "config_word"]

#: Slice kinds whose queues obey CONFIG (the ICU forwards CONFIG to them). MXM and SXM ignore it.
CONFIG_SLICE_KINDS = isa.CONFIG_SLICE_KINDS

_CONFIG = isa.BY_MNEMONIC["CONFIG"]


def config_word(mask: int) -> int:
    """The ``CONFIG mask`` instruction word (``mask`` truncated to the field's width)."""
    f = _CONFIG.fields[0]
    return _CONFIG.encode(mask=mask & f.mask)


class InstructionSweep(wiring.Component):
    """Shift one queue's instructions north one superlane per cycle, applying CONFIG masks.

    Timing: the instruction on :attr:`issue` in cycle ``t`` is on ``word[c]`` in cycle ``t + c``;
    ``valid[c]`` is high then if it is not a ``CONFIG`` and superlane ``c`` is enabled for it.
    ``present[c]`` is high for any non-CONFIG instruction regardless of the mask (for checks
    that ignore the mask, such as address ranges). ``issue_mask`` is the mask the instruction on
    :attr:`issue` will execute with (the queue's mask before this cycle's CONFIG, if any).

    Usage in a slice (one sweep per queue)::

        sweep = InstructionSweep(params)
        m.submodules.sweep_read = sweep
        wiring.connect(m, wiring.flipped(self.instr_read), sweep.issue)
        # superlane c: execute sweep.word[c] when sweep.valid[c]

    A slice with its own decode pipeline can instead use ``issue_config`` (drop the word) and
    ``issue_mask`` at superlane 0 and carry the mask along, using bit ``c`` in superlane ``c``.

    Parameters
    ----------
    params : :class:`openlpu.params.LpuParams`
        Uses ``superlanes``.

    Members
    -------
    issue : ``In(issue_signature())``
        The queue's ICU output (connect the slice's ``instr_<role>`` port here).
    issue_config : ``Out(1)``
        The word on :attr:`issue` is a valid ``CONFIG`` (not executed by the slice).
    issue_mask : ``Out(superlanes)``
        Superlanes that will execute the instruction on :attr:`issue`.
    valid, present : ``Out(1).array(superlanes)``
        Per superlane: an enabled / any non-CONFIG instruction is there this cycle.
    word : ``Out(32).array(superlanes)``
        Per superlane: the instruction word there this cycle.
    """

    def __init__(self, params):
        self._params = params
        s = params.superlanes
        super().__init__({
            "issue":        In(issue_signature()),
            "issue_config": Out(1),
            "issue_mask":   Out(s),
            "valid":        Out(1).array(s),
            "present":      Out(1).array(s),
            "word":         Out(isa.INSTR_BITS).array(s),
        })

    @property
    def params(self):
        return self._params

    def elaborate(self, platform):
        m = Module()
        s = self._params.superlanes
        view = data.View(isa.layout("CONFIG"), self.issue.word)
        is_config = Signal()
        m.d.comb += [
            is_config.eq(self.issue.valid & (view.opcode == _CONFIG.opcode) & (view["_pad"] == 0)),
            self.issue_config.eq(is_config),
        ]
        mask = Signal(s, init=(1 << s) - 1)          # the queue's current mask
        new_mask = view.mask
        new_mask = new_mask[:s] if len(new_mask) >= s else new_mask   # higher superlanes: 0
        with m.If(is_config):
            m.d.sync += mask.eq(new_mask)
        m.d.comb += self.issue_mask.eq(mask)

        stage = data.StructLayout({"valid": 1, "word": isa.INSTR_BITS, "mask": s})
        cur = Signal(stage, name="sweep_sl0")
        m.d.comb += [
            cur.valid.eq(self.issue.valid & ~is_config),
            cur.word.eq(self.issue.word),
            cur.mask.eq(mask),
        ]
        for c in range(s):
            if c:
                nxt = Signal(stage, name=f"sweep_sl{c}")
                m.d.sync += nxt.eq(cur)
                cur = nxt
            m.d.comb += [
                self.present[c].eq(cur.valid),
                self.valid[c].eq(cur.valid & cur.mask[c]),
                self.word[c].eq(cur.word),
            ]
        return m
