"""OpenLPU firmware package."""
