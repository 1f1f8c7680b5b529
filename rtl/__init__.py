"""OpenLPU rtl package."""
