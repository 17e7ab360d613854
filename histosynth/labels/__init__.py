"""Self-supervised labels for unannotated tissue, and HTD's heterogeneous sampling.

- `nuclei`: pseudo nuclei by color deconvolution + threshold + watershed, classes by clustering morphology and
  stain features (`pseudo-nuclei-kN`); detection F1 against the simulator's exact nuclei.
- `tissue`: tissue phenotypes from encoder embeddings of sub-patch cells, diversity-aware sampling and
  hierarchical k-means, nested pseudo maps at several granularities (`pseudo-tissue-kN`).
- `curriculum`: the coarse-to-fine granularity schedule k'(t) for training.
- `heterogeneity`: the 20-80% composition rule, tissue-diversity entropy sampling, adaptive per-class crops.
- `pipeline` / `sampling`: the dataset-level jobs behind `histosynth data pseudolabel` and `data sample`.
- `cache` / `cluster`: the content-addressed array cache and the small clustering toolkit they share.

Nothing here imports torch until an encoder is used.
"""

from __future__ import annotations

from histosynth.deprecated import renamed_names
from histosynth.labels.curriculum import curriculum_k, curriculum_stages
from histosynth.labels.heterogeneity import (
    ClassCrop,
    Composition,
    CompositionStats,
    CropSizing,
    class_crops,
    composition,
    diversity_entropy,
    entropy_sample,
    is_heterogeneous,
    region_complexity,
)
from histosynth.labels.nuclei import NucleiClusters, NucleiParams, detection_scores, segment_nuclei
from histosynth.labels.pipeline import (
    PseudolabelConfig,
    PseudoLabeler,
    fit_pseudolabeler,
    load_hierarchy,
    pseudolabel_dataset,
    write_pseudolabeled,
)
from histosynth.labels.tissue import CellEmbedder, Hierarchy, PhenotypeModel, fit_phenotypes

__all__ = [
    "CellEmbedder",
    "ClassCrop",
    "Composition",
    "CompositionStats",
    "CropSizing",
    "Hierarchy",
    "NucleiClusters",
    "NucleiParams",
    "PhenotypeModel",
    "PseudoLabeler",
    "PseudolabelConfig",
    "class_crops",
    "composition",
    "curriculum_k",
    "curriculum_stages",
    "detection_scores",
    "diversity_entropy",
    "entropy_sample",
    "fit_phenotypes",
    "fit_pseudolabeler",
    "is_heterogeneous",
    "load_hierarchy",
    "pseudolabel_dataset",
    "region_complexity",
    "segment_nuclei",
    "write_pseudolabeled",
]

# The British spellings of these names, for one release.
__getattr__ = renamed_names(__name__, {"PseudoLabeller": "PseudoLabeler", "fit_pseudolabeller": "fit_pseudolabeler",
                           "write_pseudolabelled": "write_pseudolabeled"}, globals())
