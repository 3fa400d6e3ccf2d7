"""Embedded default checkpoints: one directory per model (safetensors + config.json + vocab.json)."""
