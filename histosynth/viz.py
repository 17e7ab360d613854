"""Pictures of samples: label overlays and grids with a class legend (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from histosynth.atomic import atomic_file
from histosynth.classes import IGNORE_ID, get_schema
from histosynth.errors import InputError
from histosynth.schema import Sample

TISSUE_ALPHA = 0.35


def overlay(sample: Sample) -> np.ndarray:
    """The patch with its tissue map blended in class colors and nuclei outlined in class colors."""
    from skimage.segmentation import find_boundaries

    picture = sample.image.astype(np.float32)
    if sample.tissue is not None:
        lut = np.zeros((256, 3), np.float32)
        for class_id, color in get_schema(sample.tissue_schema).palette().items():
            lut[class_id] = color
        colors = lut[sample.tissue]
        labeled = (sample.tissue != 0) & (sample.tissue != IGNORE_ID)
        picture[labeled] = (1 - TISSUE_ALPHA) * picture[labeled] + TISSUE_ALPHA * colors[labeled]
        picture[sample.tissue == IGNORE_ID] *= 0.4
    nuclei = sample.nuclei
    if nuclei is not None and len(nuclei):
        palette = get_schema(nuclei.schema).palette()
        if nuclei.instances is not None:
            edges = find_boundaries(nuclei.instances, mode="inner")
            edge_classes = nuclei.class_map()[edges]
            picture[edges] = np.array([palette[c] for c in edge_classes.tolist()], np.float32).reshape(-1, 3)
        h, w = nuclei.instances.shape if nuclei.instances is not None else picture.shape[:2]
        for (x, y), c in zip(nuclei.centroids, nuclei.class_ids, strict=False):
            r, col = int(round(y)), int(round(x))
            picture[max(r - 1, 0) : min(r + 2, h), max(col - 1, 0) : min(col + 2, w)] = palette[int(c)]
    return np.clip(picture, 0, 255).astype(np.uint8)


def _legend_handles(samples: Sequence[Sample]):
    from matplotlib.patches import Patch

    handles = []
    schemas = []
    for s in samples:
        for name in (s.tissue_schema, s.nuclei.schema if s.nuclei is not None else None):
            if name and name not in schemas:
                schemas.append(name)
    for name in schemas:
        schema = get_schema(name)
        for info in schema.classes[1:]:
            handles.append(Patch(color=np.array(info.color) / 255, label=f"{name}: {info.name}"))
    return handles


def draw_grid(samples: Sequence[Sample], out: Path | str, title: str = "", columns: int = 4) -> Path:
    """Save a grid of samples (raw patch and, when labeled, its overlay) with a class legend as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        raise InputError("draw_grid: no samples to draw")
    labeled = any(s.tissue is not None or s.nuclei is not None for s in samples)
    panels = [(s, False) for s in samples] if not labeled else [(s, v) for s in samples for v in (False, True)]
    columns = min(columns * (2 if labeled else 1), len(panels))
    rows = -(-len(panels) // columns)
    handles = _legend_handles(samples)
    legend_columns = max(1, min(6, columns))
    legend_height = 0.2 + 0.16 * -(-len(handles) // legend_columns) if handles else 0.0  # inches
    height = 2.55 * rows + 0.8 + legend_height
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, height), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (sample, with_labels) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(overlay(sample) if with_labels else sample.image)
        prov = sample.provenance
        caption = f"{prov.slide_id or prov.source}" + (f" ({prov.x},{prov.y})" if prov.x is not None else "")
        if prov.generator:
            caption = f"{prov.generator} seed {prov.seed}"
        ax.set_title(("labels: " if with_labels else "") + caption, fontsize=6)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=legend_columns, fontsize=6, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, legend_height / height, 1, 0.97))
    out = Path(out)
    with atomic_file(out) as partial:
        fig.savefig(partial, dpi=110)
    plt.close(fig)
    return out
