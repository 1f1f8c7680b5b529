"""Host-side pieces of published models run on the chip: loading, tokenization, the float
parts, quantization."""
