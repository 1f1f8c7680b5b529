"""Verilog with one module per distinct sub-design.

Amaranth emits every ``Elaboratable`` it meets as its own Verilog module, so a chip with 64
identical VXM lanes or 16 identical MEM slices carries 64 or 16 copies of the same code, each
elaborated, lowered and written again. :func:`place` adds a sub-design to a module so that,
while a :func:`library` is open (:func:`openlpu.rtl.chip.generate_verilog` opens one), the
first sub-design with a given key is converted to Verilog once, on its own, under a module name
of the library, and every sub-design with that key becomes an ``Instance`` of that module by
name. Outside a library (Amaranth's simulator, FPGA builds, a plain ``verilog.convert``),
:func:`place` adds the sub-design itself, so the design is the same hierarchy as before.

A key must name everything the sub-design's logic depends on (its class is added to it): two
sub-designs with one key must be the same circuit, with the same ports; :func:`place` checks
the ports (names, directions, widths) and the chip-level tests check the rest (the whole ISA
against the reference model on the Verilog).
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import threading
import time

from amaranth.back import rtlil as _rtlil, verilog
from amaranth.hdl import ClockSignal, Elaboratable, Instance, ResetSignal
from amaranth.hdl import _ast, _ir, _nir
from amaranth.hdl._ast import ValueCastable
from amaranth.lib import wiring

__all__ = ["ModuleLibrary", "library", "place", "active_library", "zero_init_memories",
           "mark_no_inline", "NO_INLINE_MARK"]

_LIBRARY: contextvars.ContextVar = contextvars.ContextVar("openlpu_module_library", default=None)


class ModuleLibrary:
    """The separately converted modules of one Verilog conversion, in the order first placed.

    Attributes
    ----------
    prefix : str
        Start of every module name (``<prefix>_<kind>_<n>``).
    modules : dict
        ``key -> (module name, Verilog text, port widths by name and direction)``.
    placed : dict
        ``module name -> number of instances placed``.
    seconds : dict
        ``module name -> seconds`` spent converting it (without the modules it places).
    no_inline : bool
        Whether every module carries Verilator's ``/*verilator no_inline_module*/`` mark
        (:func:`library`).
    """

    def __init__(self, prefix: str, no_inline: bool = False):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
            raise ValueError(f"module library prefix {prefix!r} is not a Verilog identifier")
        self.prefix = prefix
        self.no_inline = bool(no_inline)
        self.modules: dict = {}
        self.placed: dict = {}
        self._names = 0
        self.seconds: dict = {}     # module name -> wall seconds converting it (own part)
        self._nested = [0.0]

    def module_for(self, component, key, kind: str):
        """The module name and ports of ``component``'s sub-design; converts it when ``key``
        is new."""
        full_key = (type(component).__module__, type(component).__qualname__, key)
        entry = self.modules.get(full_key)
        ports = _port_map(component)
        if entry is None:
            kind = re.sub(r"[^A-Za-z0-9_]", "_", kind)
            name = f"{self.prefix}_{kind}_{self._names}"  # reserved before nested conversions
            self._names += 1
            t0 = time.monotonic()
            self._nested.append(0.0)
            try:
                text = verilog.convert(component, name=name, emit_src=False)
            finally:
                inner = self._nested.pop()
            spent = time.monotonic() - t0
            self._nested[-1] += spent
            self.seconds[name] = spent - inner
            text = zero_init_memories(_TOP_ATTR.sub("", text))  # one top module: the chip's
            if self.no_inline:
                text = mark_no_inline(text, name)
            entry = (name, text, {n: (d, len(v)) for n, (d, v) in ports.items()})
            self.modules[full_key] = entry
        else:
            widths = {n: (d, len(v)) for n, (d, v) in ports.items()}
            if widths != entry[2]:
                diff = sorted(set(widths.items()) ^ set(entry[2].items()))
                raise ValueError(f"sub-designs with key {key!r} have different ports "
                                 f"({diff[:4]}); the key must name everything their logic "
                                 f"depends on")
        self.placed[entry[0]] = self.placed.get(entry[0], 0) + 1
        return entry[0], entry[1], ports

    def verilog(self) -> str:
        """The Verilog of every module of the library."""
        return "".join(text for _, text, _ in self.modules.values())


_TOP_ATTR = re.compile(r"^\(\* top = +1 +\*\)\n", re.M)

#: Verilator metacomment keeping a module a module of its own in the C++ model.
NO_INLINE_MARK = "/*verilator no_inline_module*/"


def mark_no_inline(text: str, name: str) -> str:
    """``text`` with :data:`NO_INLINE_MARK` as the first item of module ``name``'s body (right
    after its port list): Verilator then compiles the module once, as its own C++ class that
    every instance uses, instead of copying its logic into every place it is instantiated.
    Other tools read the mark as a comment."""
    start = text.find(f"module {name}(")
    if start < 0:
        raise ValueError(f"no module {name!r} in the converted text")
    end = text.index(");\n", start) + 3
    return text[:end] + f"  {NO_INLINE_MARK}\n" + text[end:]


def _port_map(component) -> dict:
    """``{port name: ("i" or "o", value)}`` as ``verilog.convert`` names a component's ports."""
    if not isinstance(getattr(component, "signature", None), wiring.Signature):
        raise TypeError(f"place() needs a wiring.Component, not {component!r}")
    out = {}
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        out["__".join(map(str, path))] = ("i" if member.flow == wiring.In else "o", value)
    return out


@contextlib.contextmanager
def library(prefix: str, *, field_wires: bool = False, no_inline: bool = False):
    """Open a :class:`ModuleLibrary` for the conversions made inside the ``with`` block.

    ``no_inline=True`` marks every library module ``/*verilator no_inline_module*/``
    (:func:`mark_no_inline`): Verilator keeps it apart instead of flattening it back into its
    parent, once per instance, so the C++ model grows with the distinct modules too.

    ``field_wires=False`` (default) also leaves out the wires Amaranth adds for every field of
    a signal with a data layout (``\\col[3][5].data[2]``, aliases of bits of the signal kept
    for waveform viewers): on a chip they are one wire per stream, lane byte and column and
    the largest part of the top module's text, and nothing reads them. The signals themselves
    keep their names. (This relies on Amaranth 0.5's RTLIL emitter, the version pinned in
    ``pyproject.toml``; with another version the wires stay.)
    """
    lib = ModuleLibrary(prefix, no_inline=no_inline)
    token = _LIBRARY.set(lib)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_patched("emit_memory", _emit_memory_unless_zero))
            if not field_wires:
                stack.enter_context(_patched("emit_signal_fields", lambda self: None))
                stack.enter_context(_patched("emit_signal_fields", _signal_fields_lean,
                                             owner=_ir.NetlistEmitter))
            yield lib
    finally:
        _LIBRARY.reset(token)


_PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def _patched(method, replacement, owner=None):
    """``<owner>.<method>`` (default ``rtlil.ModuleEmitter``) replaced while the block runs (if
    Amaranth has it)."""
    emitter = getattr(_rtlil, "ModuleEmitter", None) if owner is None else owner
    if emitter is None or not hasattr(emitter, method):
        yield
        return
    with _PATCH_LOCK:
        saved = getattr(emitter, method)
        if replacement is _emit_memory_unless_zero:
            def replacement(self, cell_idx, cell, _saved=saved):
                return _emit_memory_unless_zero(self, cell_idx, cell, _saved)
        setattr(emitter, method, replacement)
        try:
            yield
        finally:
            setattr(emitter, method, saved)


def _signal_fields_lean(self):
    """``NetlistEmitter.emit_signal_fields`` without the fields of data-layout signals: only
    each signal's own entry (its value, signedness and, for an enum, the enum attributes),
    which is all the Verilog keeps once the field wires are left out. Amaranth's version also
    lowers every field of every layout (one value per stream, lane byte and column of a
    chip), for the field wires alone."""
    for signal, fragment in self.design.signal_lca.items():
        module_idx = self.fragment_module_idx[fragment]
        val, signed = self.emit_rhs(module_idx, signal)
        field = _nir.SignalField(val, signed=signed)
        fmt = signal._format
        if isinstance(fmt, _ast.Format.Enum):
            fval, fsigned = self.emit_rhs(module_idx, fmt._value)
            if fval == val:
                field = _nir.SignalField(fval, signed=fsigned, enum_name=fmt._name,
                                         enum_variants=fmt._variants)
        self.netlist.signal_fields[signal] = {(): field}


def _emit_memory_unless_zero(self, cell_idx, cell, emit):
    """Memories that start as all zeros get no init cell: Yosys would write one statement per
    word (``mem[5] = 8'h00;``: a million lines for the MEM slice of ``base``); the library
    writes a loop instead (:func:`zero_init_memories`)."""
    if any(cell.init):
        emit(self, cell_idx, cell)


_MEM_DECL = re.compile(r"^  reg (\[\d+:0\] )?(\\\S+ |[A-Za-z_][A-Za-z0-9_$]*) ?\[(\d+):0\];\n"
                       r"(?!  initial begin)", re.M)


def zero_init_memories(text: str) -> str:
    """Give every memory of ``text`` (Yosys Verilog) without an ``initial`` block one that
    sets all its words to zero, with a loop: the contents Amaranth's memories start with
    (the memories left without init cell by :func:`library`)."""
    def init(mo):
        width, name, last = mo.group(1), mo.group(2), int(mo.group(3))
        bits = int(width[1:width.index(":")]) + 1 if width else 1
        if not name.startswith("\\"):
            name = name.rstrip()
        block = re.sub(r"[^A-Za-z0-9_]", "_", name.strip().lstrip("\\"))
        return (f"{mo.group(0)}  initial begin : zero_{block}\n"
                f"    integer i;\n"
                f"    for (i = 0; i <= {last}; i = i + 1) {name}[i] = {bits}'d0;\n"
                f"  end\n")
    return _MEM_DECL.sub(init, text)


def active_library() -> ModuleLibrary | None:
    """The library open in this context, or ``None``."""
    return _LIBRARY.get()


def place(m, name: str, component, key, kind: str | None = None) -> None:
    """Add ``component`` to module ``m`` as submodule ``name``: itself, or, while a
    :func:`library` is open, an ``Instance`` of the library's module for ``key`` (converted
    the first time the key is placed). ``kind`` names the module (default: the class name).
    The ``Instance`` drives and reads the component's own port signals, so the code around it
    is the same either way; the instance is a wire-for-wire connection (no added delay)."""
    lib = _LIBRARY.get()
    if lib is None:
        m.submodules[name] = component
        return
    modname, text, ports = lib.module_for(component, key, kind or type(component).__name__)
    kwargs = {f"{d}_{n}": v for n, (d, v) in ports.items()}
    header = text[text.index(f"module {modname}("):]
    header = header[:header.index(");")]
    for clk_port, sig in (("clk", ClockSignal), ("rst", ResetSignal)):
        if re.search(rf"\b{clk_port}\b", header):
            kwargs[f"i_{clk_port}"] = sig("sync")
    m.submodules[name] = Instance(modname, **kwargs)
    _mark_used(component)               # converted through the key's first instance, not here


def _mark_used(obj, depth=5):
    """Silence Amaranth's "created but never used" for ``obj`` and the elaboratables it holds
    (e.g. memories made in its constructor): the library module stands for them."""
    if isinstance(obj, Elaboratable):
        obj._MustUse__used = True
    if depth == 0:
        return
    values = (obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple))
              else vars(obj).values() if isinstance(obj, Elaboratable) else ())
    for v in values:
        if isinstance(v, (Elaboratable, list, tuple, dict)):
            _mark_used(v, depth - 1)
