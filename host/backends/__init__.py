"""Backends of the host driver, selected by name.

``model``      the reference model (:class:`.model.ModelBackend`)
``amaranth``   the RTL in Amaranth's simulator (:class:`.amaranth_sim.AmaranthBackend`)
``verilator``  the RTL compiled by Verilator (:class:`.verilator_sim.VerilatorBackend`)
``serial``     an FPGA board behind the UART bridge (:class:`.serial_link.SerialBackend`;
               pass the serial port or a byte transport as keyword argument ``port``)

Each is imported only when it is opened, so the model works without a simulator installed.
"""

from __future__ import annotations

from openlpu.params import LpuParams

from ..backend import Backend

__all__ = ["BACKENDS", "open_backend", "UnknownBackend"]


class UnknownBackend(ValueError):
    """No backend has the requested name."""


def _model(params, **kw):
    from .model import ModelBackend
    return ModelBackend(params, **kw)


def _amaranth(params, **kw):
    from .amaranth_sim import AmaranthBackend
    return AmaranthBackend(params, **kw)


def _verilator(params, **kw):
    from .verilator_sim import VerilatorBackend
    return VerilatorBackend(params, **kw)


def _serial(params, port=None, **kw):
    if port is None:
        raise ValueError("the serial backend needs port=<device path or byte transport>")
    from .serial_link import SerialBackend
    return SerialBackend(params, port, **kw)


BACKENDS = {"model": _model, "amaranth": _amaranth, "verilator": _verilator, "serial": _serial}


def open_backend(name: str, params: LpuParams, **kwargs) -> Backend:
    """Create the backend called ``name`` for the chip ``params``.

    Extra keyword arguments go to the backend's constructor. Raises :class:`UnknownBackend`
    naming the known backends if ``name`` is not one of them.
    """
    try:
        factory = BACKENDS[name]
    except (KeyError, TypeError):
        raise UnknownBackend(f"unknown backend {name!r}; known backends: "
                             f"{', '.join(BACKENDS)}") from None
    if not isinstance(params, LpuParams):
        raise TypeError(f"params must be an LpuParams, not {type(params).__name__}")
    return factory(params, **kwargs)
