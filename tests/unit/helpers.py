"""Small hand-made Samples for tests that need exact, varied labels without a source."""

from __future__ import annotations

import numpy as np

from histosynth.schema import Nuclei, Provenance, Sample


def labeled_sample(i: int, size: int = 32, nuclei: bool = True, tissue: bool = True, mask: bool = False) -> Sample:
    """A random patch with a striped tissue map and a few rectangular nuclei; differs for every `i`."""
    rng = np.random.default_rng(i)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    tissue_map = None
    if tissue:
        tissue_map = np.ones((size, size), np.uint8)
        tissue_map[: size // 2] = 2
        tissue_map[0, : i % size] = 255
    nuc = None
    if nuclei:
        labels = np.zeros((size, size), np.int32)
        for k in range(1 + i % 4):
            r, c = rng.integers(0, size - 4, 2)
            labels[r : r + 3, c : c + 4] = k + 1
        present = [v for v in np.unique(labels) if v]
        nuc = Nuclei.from_instance_map("pannuke", labels, {int(v): 1 + (int(v) + i) % 5 for v in present})
    return Sample(
        image=image,
        provenance=Provenance("test", f"slide-{i % 3}", x=i * size, y=7, level=0, mpp=0.5 + i / 1000, seed=i),
        tissue=tissue_map,
        tissue_schema="camelyon16" if tissue else None,
        nuclei=nuc,
        completion_mask=(rng.random((size, size)) > 0.5) if mask else None,
    )
