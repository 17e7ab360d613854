"""Shared diffusion core: presets (torch-free), backbones, training loop and samplers (diffusers + accelerate)."""
