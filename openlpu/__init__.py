"""OpenLPU: an open, cycle-accurate Groq-style tensor streaming processor.

Core definitions shared by every layer live here: :mod:`openlpu.params` (the parameter
object and presets) and :mod:`openlpu.isa` (instruction set, latencies, host register map).
Sub-packages map onto the top-level folders of the repository: ``openlpu.rtl`` (``rtl/``),
``openlpu.firmware`` (``firmware/``), ``openlpu.host`` (``host/``), ``openlpu.verification``
(``verification/``) and ``openlpu.synth`` (``synth/``).
"""

from .params import LpuParams, PRESETS, preset  # noqa: F401

__version__ = "0.1.0"
