"""The reference rows: real-heldout (the real-data ceiling) and copy-nearest (the copy baseline). The model is in
model.py, the presets in presets.py. The generators and their component classes are importable from the package
too, so `histosynth.baselines.reference:RealHeldout` targets and model_index.json entries naming this package
resolve."""

from histosynth.baselines.reference.model import CopyNearest, PassThrough, PatchBank, RealHeldout

__all__ = ["CopyNearest", "PassThrough", "PatchBank", "RealHeldout"]
