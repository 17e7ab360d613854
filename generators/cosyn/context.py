"""CoSyn's optional context: the patch's tissue type as a class id for the UNet's class embedding.

PanNuke's types.npy names each patch's tissue; the pannuke reader keeps it as the first part of the provenance
slide id ("Breast/fold1/42"). Id 0 is the null context: classifier-free dropout trains it, guidance contrasts
against it, and a patch whose tissue is not in the model's list gets it too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from histosynth.schema import Sample

PANNUKE_TISSUES = ("Adrenal_gland", "Bile-duct", "Bladder", "Breast", "Cervix", "Colon", "Esophagus", "HeadNeck",
                   "Kidney", "Liver", "Lung", "Ovarian", "Pancreatic", "Prostate", "Skin", "Stomach", "Testis",
                   "Thyroid", "Uterus")
"""The 19 tissue names of PanNuke's types.npy (the contexts a PanNuke-trained model would list)."""
NULL_CONTEXT = 0


def tissue_name(sample: Sample) -> str | None:
    """The tissue type a Sample's provenance names (the first part of its slide id), if any."""
    slide = sample.provenance.slide_id
    return slide.split("/", 1)[0] if slide else None


def context_ids(samples: Sequence[Sample], contexts: Sequence[str]) -> np.ndarray:
    """(B,) int64: 1 + the index of each sample's tissue in `contexts`, or NULL_CONTEXT when absent or unknown."""
    index = {name: i + 1 for i, name in enumerate(contexts)}
    return np.array([index.get(tissue_name(s) or "", NULL_CONTEXT) for s in samples], np.int64)
