"""Small real-format inputs for the recipe tests: Camelyon16 pyramidal TIFF slides with ASAP XML annotations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from format_writers import asap_xml, tissue_slide, write_panda, write_pyramid

SLIDE = 384  # level-0 px at 0.25 um/px: 6 x 6 tiles of 32 px at 0.5 um/px
# Tumor is the upper-left triangle, so tiles along the diagonal hold 20-80% tumor (heterogeneous) and the others
# one class; a small _2 exclusion square is "ignore".
TUMOR = [(0, 0), (SLIDE, 0), (0, SLIDE)]
EXCLUSION = [(300, 300), (330, 300), (330, 330), (300, 330)]


def write_camelyon16(root: Path, slides: tuple[str, ...] = ("tumor_001", "tumor_002", "tumor_003")) -> Path:
    """A Camelyon16 training folder (tumor/*.tif + lesion_annotations/*.xml) of a few small slides; returns it."""
    for index, stem in enumerate(slides):
        image = tissue_slide(SLIDE, SLIDE, (0, 0, SLIDE, SLIDE), seed=index)
        image[:, :, 0] = (image[:, :, 0].astype(int) - 30 * (index % 2)).clip(0, 255)  # slides differ a little
        write_pyramid(root / "tumor" / f"{stem}.tif", image, mpp=0.25, factors=(1, 2, 4))
        asap_xml(root / "lesion_annotations" / f"{stem}.xml", [("_0", TUMOR), ("_2", EXCLUSION)])
    return root


PANDA_SLIDE = 192  # level-0 px at 0.5 um/px: 6 x 6 tiles of 32 px


def write_panda_folder(root: Path, provider: str = "karolinska", n: int = 3) -> Path:
    """A PANDA Kaggle folder (train_images/, train_label_masks/ with labels in the red channel, train.csv) of `n`
    small slides of `provider`: benign tissue (1) with a cancerous upper-left triangle (2); returns it."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:PANDA_SLIDE, :PANDA_SLIDE]
    labels = np.where(x + y < PANDA_SLIDE, 2, 1).astype(np.uint8)
    for index in range(n):
        image = tissue_slide(PANDA_SLIDE, PANDA_SLIDE, (0, 0, PANDA_SLIDE, PANDA_SLIDE), seed=index)
        write_panda(root, f"{provider[0]}{index:03d}", image, labels, provider, rng)
    return root
