"""Dual-LoRA: nuclei-centroid-guided synthesis and completion with two switchable LoRA adapters (papers/000)."""
