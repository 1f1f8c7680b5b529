"""Reference model: a cycle-accurate numpy model of the chip, and its host-driver backend."""

from .chip import LpuModel, ModelError, ScheduleHazard
from .backend import ModelBackend

__all__ = ["LpuModel", "ModelError", "ScheduleHazard", "ModelBackend"]
