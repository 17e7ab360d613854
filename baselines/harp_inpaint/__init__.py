"""harp-inpaint: a HARP-like inpainting baseline (Palette's conditional DDPM on diffusers). The model is in
model.py, the presets in presets.py. `HarpInpaint` is importable from the package too, so
`histosynth.baselines.harp_inpaint:HarpInpaint` targets resolve."""

from histosynth.baselines.harp_inpaint.model import HarpInpaint

__all__ = ["HarpInpaint"]
