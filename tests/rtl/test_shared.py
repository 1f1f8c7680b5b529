"""openlpu.rtl.shared: one Verilog module per distinct sub-design, the same hierarchy otherwise."""

import re

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from openlpu.rtl import shared


class Acc(wiring.Component):
    """Adds ``x`` to a register each cycle; ``q`` is the register."""

    def __init__(self, width):
        self._width = width
        super().__init__({"x": In(width), "pair": In(data.ArrayLayout(4, 2)), "q": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.q.eq(self.q + self.x + self.pair[0] + self.pair[1])
        return m


class Comb(wiring.Component):
    """No clock: ``y = ~x``."""

    def __init__(self):
        super().__init__({"x": In(8), "y": Out(8)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.y.eq(~self.x)
        return m


class Top(wiring.Component):
    def __init__(self, widths=(8, 8, 8)):
        self._widths = widths
        super().__init__({"x": In(8), "total": Out(12), "inv": Out(8)})

    def elaborate(self, platform):
        m = Module()
        accs = []
        for n, w in enumerate(self._widths):
            acc = Acc(w)
            shared.place(m, f"acc{n}", acc, key=(w,), kind="acc")
            m.d.comb += [acc.x.eq(self.x + n), acc.pair.eq(n)]
            accs.append(acc.q)
        inv = Comb()
        shared.place(m, "inv", inv, key=(), kind="inv")
        m.d.comb += [inv.x.eq(self.x), self.inv.eq(inv.y), self.total.eq(sum(accs))]
        return m


def _library_verilog(top):
    with shared.library("t") as lib:
        text = verilog.convert(top, name="top", emit_src=False)
    return text + lib.verilog(), lib


def test_one_module_per_key_instantiated_by_name():
    text, lib = _library_verilog(Top((8, 8, 10)))
    modules = re.findall(r"^module (\S+)\(", text, re.M)
    assert sorted(modules) == ["t_acc_0", "t_acc_1", "t_inv_2", "top"]
    assert len(re.findall(r"^\s*t_acc_0 \S+ \(", text, re.M)) == 2      # two 8-bit accumulators
    assert len(re.findall(r"^\s*t_acc_1 \S+ \(", text, re.M)) == 1
    assert lib.placed == {"t_acc_0": 2, "t_acc_1": 1, "t_inv_2": 1}
    assert text.count("(* top =") == 1                                     # only the chip's own
    inv = text[text.index("module t_inv_2("):]
    assert "clk" not in inv[:inv.index(");")]          # no clock port for a comb-only module


def test_no_inline_mark_opens_every_library_module():
    with shared.library("t", no_inline=True) as lib:
        text = verilog.convert(Top((8, 8, 10)), name="top", emit_src=False)
    text += lib.verilog()
    for name in ("t_acc_0", "t_acc_1", "t_inv_2"):
        body = text[text.index(f"module {name}("):]
        header_end = body.index(");\n") + 3
        assert body[header_end:].startswith(f"  {shared.NO_INLINE_MARK}\n"), name
    assert text.count(shared.NO_INLINE_MARK) == 3          # not in the top module
    plain, _ = _library_verilog(Top((8, 8, 10)))
    assert shared.NO_INLINE_MARK not in plain               # off unless asked for
    # the mark changes nothing else: the same text without it
    assert text.replace(f"  {shared.NO_INLINE_MARK}\n", "") == plain


def test_mark_no_inline_names_a_missing_module():
    with pytest.raises(ValueError, match="no module 'nope'"):
        shared.mark_no_inline("module a(x);\nendmodule\n", "nope")


def test_plain_hierarchy_outside_a_library():
    text = verilog.convert(Top(), name="top", emit_src=False)
    assert not re.search(r"^module t_", text, re.M)
    assert len(re.findall(r"^module \\top\.acc\d", text, re.M)) == 3


def _run(top, cycles=5):
    out = []
    sim = Simulator(top)
    sim.add_clock(1e-6)

    async def bench(ctx):
        for t in range(cycles):
            ctx.set(top.x, 3 * t + 1)
            await ctx.tick()
            out.append((ctx.get(top.total), ctx.get(top.inv)))

    sim.add_testbench(bench)
    sim.run()
    return out


def test_simulation_uses_the_components():
    # expected from the definition: acc n adds x + n + pair[0] (n) + pair[1] (0) each cycle
    got = _run(Top())
    q = [0, 0, 0]
    want = []
    for t in range(5):
        x = 3 * t + 1
        q = [(q[n] + x + 2 * n) & 0xFF for n in range(3)]
        want.append((sum(q), ~x & 0xFF))
    assert got == want


def test_same_key_different_ports_raises():
    class Bad(wiring.Component):
        def __init__(self):
            super().__init__({"total": Out(12)})

        def elaborate(self, platform):
            m = Module()
            for n, w in enumerate((8, 9)):
                acc = Acc(w)
                shared.place(m, f"acc{n}", acc, key="same", kind="acc")
                m.d.comb += acc.x.eq(1)
            return m

    with pytest.raises(ValueError, match="different ports"):
        _library_verilog(Bad())


def test_place_needs_a_component():
    with pytest.raises(TypeError, match="wiring.Component"):
        with shared.library("t"):
            shared.place(Module(), "x", Signal(), key=())


def test_field_wires_left_out_by_default():
    class Fields(wiring.Component):
        def __init__(self):
            super().__init__({"y": Out(8)})

        def elaborate(self, platform):
            m = Module()
            s = Signal(data.StructLayout({"lo": 4, "hi": 4}))
            m.d.sync += s.lo.eq(s.lo + 1)
            m.d.comb += self.y.eq(s)
            return m

    with shared.library("t"):
        lean = verilog.convert(Fields(), name="top", emit_src=False)
    with shared.library("t", field_wires=True):
        full = verilog.convert(Fields(), name="top", emit_src=False)
    assert r"\s.lo" not in lean and r"\s.lo" in full
    assert r"\s.lo" in verilog.convert(Fields(), name="top", emit_src=False)   # restored after


def test_bad_prefix():
    with pytest.raises(ValueError, match="Verilog identifier"):
        shared.ModuleLibrary("9x")


class Mem(wiring.Component):
    """A 100-word memory, zero or not at the start, read at ``addr``."""

    def __init__(self, init=()):
        self._init = list(init)
        super().__init__({"addr": In(7), "data": Out(6)})

    def elaborate(self, platform):
        from amaranth.lib.memory import Memory
        m = Module()
        m.submodules.mem = mem = Memory(shape=6, depth=100, init=self._init)
        rd = mem.read_port(domain="comb")
        m.d.comb += [rd.addr.eq(self.addr), self.data.eq(rd.data)]
        return m


def test_zero_memories_get_a_loop_not_a_statement_per_word():
    class Two(wiring.Component):
        def __init__(self):
            super().__init__({"addr": In(7), "data": Out(6)})

        def elaborate(self, platform):
            m = Module()
            zero, ones = Mem(), Mem([5] * 100)
            shared.place(m, "zero", zero, key="zero", kind="zero")
            shared.place(m, "ones", ones, key="ones", kind="ones")
            m.d.comb += [zero.addr.eq(self.addr), ones.addr.eq(self.addr),
                         self.data.eq(zero.data | ones.data)]
            return m

    text, _ = _library_verilog(Two())
    zero = text[text.index("module t_zero_0("):text.index("endmodule", text.index("module t_zero_0("))]
    ones = text[text.index("module t_ones_1("):text.index("endmodule", text.index("module t_ones_1("))]
    assert re.search(r"for \(i = 0; i <= 99; i = i \+ 1\) \S+ ?\[i\] = 6'd0;", zero)
    assert "[99] =" not in zero
    assert "6'h05" in ones and "for (i = 0" not in ones        # a non-zero init is kept as is
    plain = verilog.convert(Mem(), name="m", emit_src=False)  # outside a library: unchanged
    assert "[99] = 6'h00;" in plain and "for (i = 0" not in plain


def test_chip_verilog_has_one_module_per_distinct_sub_design():
    from openlpu.params import preset
    from openlpu.rtl.chip import convert_chip
    p = preset("tiny")
    text, lib = convert_chip(p)
    defined = [n for n in re.findall(r"^module (lpu_\w+)\(", text, re.M) if n != "lpu_chip"]
    assert len(defined) == len(set(defined)) == len(lib.modules)
    mem = [n for n in defined if n.startswith("lpu_mem_slice_")]
    assert len(mem) == 1 and lib.placed[mem[0]] == 2 * p.mem_slices
    assert len(re.findall(rf"^\s*{mem[0]} \S+ \(", text, re.M)) == 2 * p.mem_slices
    icus = [n for n in defined if n.startswith("lpu_icu_")]
    roles = {(q.slice.kind, q.role) for q in p.queues}
    assert len(icus) == len(roles)
    assert sum(lib.placed[n] for n in icus) == len(p.queues)
    assert text.startswith("/* Generated by") and "module lpu_chip(" in text
    from openlpu.rtl.chip import keep_modules_apart
    assert not keep_modules_apart(p) and shared.NO_INLINE_MARK not in text
    assert not any(n.startswith("lpu_sr_column_") for n in defined)   # columns in the top


def test_kept_apart_chip_verilog_marks_every_module_and_shares_the_sr_columns():
    from openlpu.params import preset
    from openlpu.rtl.chip import convert_chip
    p = preset("tiny")
    text, lib = convert_chip(p, no_inline=True)
    defined = [n for n in re.findall(r"^module (lpu_\w+)\(", text, re.M) if n != "lpu_chip"]
    assert text.count(shared.NO_INLINE_MARK) == len(defined) == len(lib.modules)
    cols = [n for n in defined if n.startswith("lpu_sr_column_")]   # both directions, one module
    assert len(cols) == 1 and lib.placed[cols[0]] == 2 * (p.sr_columns - 1)
    assert len(re.findall(rf"^\s*{cols[0]} \S+ \(", text, re.M)) == 2 * (p.sr_columns - 1)


def test_verilator_build_of_kept_apart_modules_uses_the_big_design_level():
    from openlpu.host.backends import verilator_sim as vs
    plain = dict(v.split("=", 1) for v in vs._make_vars("module lpu_chip(x);\nendmodule\n"))
    marked = dict(v.split("=", 1) for v in vs._make_vars(
        f"module lpu_chip(x);\n  {shared.NO_INLINE_MARK}\nendmodule\n"))
    assert plain["OPT_FAST"] == vs._OPT and marked["OPT_FAST"] == vs._BIG_OPT
    assert {k: v for k, v in plain.items() if k != "OPT_FAST"} == \
        {k: v for k, v in marked.items() if k != "OPT_FAST"}
    assert f"OPENLPU_KEPT_APART_OPT_FAST={vs._BIG_OPT}" in vs._MAKE_VARS   # in the build key
