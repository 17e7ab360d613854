"""Training and condition data for the HTD family: Samples resized to the model's resolution, held as arrays.

Patches of another size are resized to the model resolution (images with Lanczos, tissue maps nearest, so ids
stay ids). The training set is held in memory as uint8 arrays (N x R x R x 3): fine for the demo and for tens
of thousands of 256 px patches; a streaming loader for paper-scale sets is future work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from histosynth.classes import get_schema
from histosynth.generators.htd.conditions import is_heterogeneous
from histosynth.schema import Sample


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 image to size x size (Lanczos; unchanged when already that size)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS))


def resize_map(tissue: np.ndarray, size: int) -> np.ndarray:
    """uint8 label map to size x size (nearest neighbour keeps class ids exact)."""
    if tissue.shape == (size, size):
        return tissue
    return np.asarray(Image.fromarray(tissue).resize((size, size), Image.NEAREST))


@dataclass
class TrainingSet:
    """Patches as arrays at the model resolution, plus where they came from (for the model card)."""

    images: np.ndarray
    tissue: np.ndarray | None
    tissue_schema: str | None
    description: str
    licence: str = "other"
    source_datasets: list[str] = field(default_factory=list)
    dropped: int = 0  # patches left out by the heterogeneity rule

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int | None:
        return None if self.tissue_schema is None else get_schema(self.tissue_schema).num_classes


def load_training_set(data: Path | str | Iterable[Sample], resolution: int, need_tissue: bool,
                      heterogeneity: tuple[float, float] | None) -> TrainingSet:
    """Read a dataset folder (or Samples), resize, and keep the heterogeneous patches when maps are present."""
    description, licence, sources = "in-memory Samples", "other", []
    if isinstance(data, (str, Path)):
        from histosynth.disk import iter_samples, read_metadata

        meta = read_metadata(data)
        description = f"dataset folder {Path(data).name!r} ({meta.get('pretty_name', '')})"
        licence = str(meta.get("license", "other"))
        sources = [s.split("|")[-1] for s in meta.get("source_datasets", []) if s != "original"]
        samples: Iterable[Sample] = iter_samples(data)
    else:
        samples = data
    images, maps, schema, dropped = [], [], None, 0
    for i, sample in enumerate(samples):
        if sample.tissue is None:
            if need_tissue:
                raise ValueError(f"training sample {i} ({sample.where}) has no tissue map; this generator is "
                                 f"conditioned on tissue maps (label the data first, e.g. with pseudo-labels)")
        else:
            if schema is None:
                schema = sample.tissue_schema
            elif sample.tissue_schema != schema:
                raise ValueError(f"training sample {i} uses tissue schema {sample.tissue_schema!r}, earlier ones {schema!r}")
            if heterogeneity is not None and not is_heterogeneous(sample.tissue, *heterogeneity):
                dropped += 1
                continue
        images.append(resize_image(sample.image, resolution))
        if sample.tissue is not None:
            maps.append(resize_map(sample.tissue, resolution))
    if not images:
        hint = f" ({dropped} patches failed the heterogeneity rule {heterogeneity}; relax it with heterogeneity=None)" if dropped else ""
        raise ValueError(f"no training patches in {description}{hint}")
    tissue = np.stack(maps) if maps and len(maps) == len(images) else None
    return TrainingSet(np.stack(images), tissue, schema if tissue is not None else None, description, licence,
                       sources, dropped)


def condition_arrays(conditions: Sequence[Sample], resolution: int, need_tissue: bool
                     ) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Images (B, R, R, 3) and maps (B, R, R) of condition Samples at the model resolution, and their schema."""
    schemas = {c.tissue_schema for c in conditions}
    if need_tissue:
        missing = [i for i, c in enumerate(conditions) if c.tissue is None]
        if missing:
            raise ValueError(f"conditions {missing[:5]} have no tissue map; this generator needs one per condition")
        if len(schemas) > 1:
            raise ValueError(f"conditions mix tissue schemas {sorted(schemas)}")
    images = np.stack([resize_image(c.image, resolution) for c in conditions])
    if not need_tissue or not conditions:
        return images, None, None
    maps = np.stack([resize_map(c.tissue, resolution) for c in conditions])  # type: ignore[arg-type]
    return images, maps, schemas.pop()
