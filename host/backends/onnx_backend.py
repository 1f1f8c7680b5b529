"""An ``onnx.backend.base.Backend`` running quantized ONNX models on the LPU (docs/compiler.md,
*ONNX import*).

``OnnxBackend.prepare(model, device="CPU", preset=None, backend="model")`` returns an
:class:`OnnxBackendRep`; its ``run(inputs)`` imports the model
(:func:`openlpu.firmware.graph.onnx_import.import_onnx_model`, graph inputs that are scales or
zero points bound to the values given), compiles it with ``compile_graph`` on ``preset`` (by
default the first of :data:`PRESET_ORDER` it compiles for), runs the package on the device
backend (``model`` by default) and returns the outputs in the model's dtypes and shapes. The
package's measured cycles must equal its prediction (``rep.last_cycles`` keeps both); a
mismatch raises.
"""

from __future__ import annotations

import numpy as np
from onnx.backend.base import Backend, BackendRep

from openlpu.firmware.graph import compile_graph
from openlpu.firmware.graph.onnx_import import import_onnx_model
from openlpu.firmware.schedule import CompileError
from openlpu.params import preset as _preset

__all__ = ["OnnxBackend", "OnnxBackendRep", "PRESET_ORDER", "prepare", "run_model",
           "supports_device"]

#: presets tried in order when none is given (smallest first; "default" has no VXM ALU, so a
#: requantize needs "mini" or larger)
PRESET_ORDER = ("default", "mini", "base")


class OnnxBackendRep(BackendRep):
    """A prepared model: compiled (per set of bound scales and zero points) and run on
    ``run``."""

    def __init__(self, model, preset=None, backend="model"):
        self.model = model
        self.preset = preset
        self.backend = backend
        self.last_cycles = None          # (measured, predicted) of the last run
        self.last_package = None
        self._cache = {}

    def _compile(self, bindings):
        key = tuple(sorted((k, np.asarray(v).tobytes()) for k, v in bindings.items()))
        if key in self._cache:
            return self._cache[key]
        imp = import_onnx_model(self.model, bindings=bindings)
        names = [self.preset] if self.preset else list(PRESET_ORDER)
        err = None
        for n in names:
            params = _preset(n)
            try:
                pkg = compile_graph(imp.graph, params)
                break
            except CompileError as e:
                err = e
        else:
            raise err
        self._cache[key] = (imp, params, pkg)
        return imp, params, pkg

    def run(self, inputs, **kwargs):
        from openlpu.host.device import Device
        names = [i.name for i in self.model.graph.input
                 if i.name not in {t.name for t in self.model.graph.initializer}]
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
            if len(inputs) != len(names):
                raise ValueError(f"the model has {len(names)} inputs ({', '.join(names)}), "
                                 f"{len(inputs)} were given")
            feeds = dict(zip(names, inputs))
        # bind the inputs the import reads as constants (scales, zero points): the small ones
        # read as scale / zero-point operands
        roles = _parameter_inputs(self.model)
        bindings = {k: np.asarray(v) for k, v in feeds.items() if k in roles}
        imp, params, pkg = self._compile(bindings)
        with Device.open(self.backend, params) as dev:
            cycles, outs = dev.run_package(pkg, imp.convert_inputs(feeds))
        self.last_cycles = (cycles, pkg.predicted_cycles)
        self.last_package = pkg
        if cycles != pkg.predicted_cycles:
            raise RuntimeError(f"{pkg.name}: ran {cycles} cycles, {pkg.predicted_cycles} "
                               f"predicted")
        res = imp.convert_outputs(outs)
        return tuple(res[o.name] for o in self.model.graph.output)


#: input positions of each operator that are scales or zero points
_PARAM_SLOTS = {"MatMulInteger": (2, 3), "QLinearMatMul": (1, 2, 4, 5, 6, 7),
                "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2)}


def _parameter_inputs(model) -> set:
    out = set()
    for n in model.graph.node:
        for i in _PARAM_SLOTS.get(n.op_type, ()):
            if i < len(n.input) and n.input[i]:
                out.add(n.input[i])
    return out


class OnnxBackend(Backend):
    """``prepare`` / ``run_model`` / ``supports_device`` of the ONNX backend API (CPU: the
    host drives the device)."""

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        super().prepare(model, device, **kwargs)
        return OnnxBackendRep(model, kwargs.get("preset"), kwargs.get("backend", "model"))

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().startswith("CPU")


prepare = OnnxBackend.prepare
run_model = OnnxBackend.run_model
supports_device = OnnxBackend.supports_device
