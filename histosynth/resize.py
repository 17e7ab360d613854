"""Square resizing of a patch and its label map to a model's resolution, one rule for generators and benchmark.

Images use Lanczos; label maps use nearest neighbor, so class ids stay exact and no id is invented between two
classes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 image to size x size (Lanczos; unchanged when already that size)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def resize_map(tissue: np.ndarray, size: int) -> np.ndarray:
    """uint8 label map to size x size (nearest neighbor keeps class ids exact)."""
    if tissue.shape == (size, size):
        return tissue
    return np.asarray(Image.fromarray(tissue).resize((size, size), Image.Resampling.NEAREST))
