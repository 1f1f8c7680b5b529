"""OpenLPU synth package."""
