"""Conditioning strategies: condition Samples -> tensors (see base.Conditioner and batch.ConditionBatch).

tissue.TissueOneHot (K), crops.HTDCrops (4K, HTD), centroids.CentroidMaps (K [+1], nuclei), masked.MaskedImage (4,
completion), compose.Compose (several at once); registry.conditioner_from_config rebuilds any of them from config().
layouts.LayoutSampler draws new centroid layouts from real ones (resampled, jittered, thinned or filled to the real
class densities), so a factory can condition on nuclei layouts no slide had.
"""
