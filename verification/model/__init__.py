"""Reference model: a cycle-accurate numpy model of the chip. Its host-driver backend is
:class:`openlpu.host.backends.model.ModelBackend`."""

from .chip import LpuModel, ModelError, ScheduleHazard

__all__ = ["LpuModel", "ModelError", "ScheduleHazard"]
