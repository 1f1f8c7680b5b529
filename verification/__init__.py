"""OpenLPU verification package."""
