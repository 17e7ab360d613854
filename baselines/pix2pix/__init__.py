"""pix2pix (Isola et al., CVPR 2017): tissue map (+ nuclei centroid maps) -> H&E patch, on the shared GAN base.
The model is in model.py, the presets in presets.py. The generator and its network classes are importable from
the package too, so `histosynth.baselines.pix2pix:Pix2Pix` targets and model_index.json entries naming this
package resolve."""

from histosynth.baselines.pix2pix.model import PatchGAN, Pix2Pix, UNetGenerator

__all__ = ["PatchGAN", "Pix2Pix", "UNetGenerator"]
