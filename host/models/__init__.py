"""Host-side pieces of published models run on the chip (loading, tokenization, float parts, quantization)."""
