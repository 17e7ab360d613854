"""HTD's two ablations, htd-unconditional and htd-embedding: HTD's diffusion generator with another conditioner,
sharing HTD's presets (histosynth.generators.htd.presets). The model is in model.py; its classes are importable
from the package too, so `histosynth.baselines.htd_ablations:HTDEmbedding` targets and model_index.json entries
naming this package resolve."""

from histosynth.baselines.htd_ablations.model import CropEmbeddings, EmbeddingBroadcast, HTDEmbedding, HTDUnconditional

__all__ = ["CropEmbeddings", "EmbeddingBroadcast", "HTDEmbedding", "HTDUnconditional"]
