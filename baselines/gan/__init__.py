"""The conditional GANs' shared parts: `GANGenerator` (base.py; its docstring says how to subclass it), the
configs (presets.py) and reproducible-noise layers (layers.py)."""
