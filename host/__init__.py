"""OpenLPU host package."""
