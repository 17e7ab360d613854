"""`panda`: PANDA prostate biopsies (Kaggle 2020; Radboud and Karolinska), slide pyramids with label-mask
pyramids, tiled at a requested mpp.

Format (the Kaggle layout under `path`): `train.csv` with columns `image_id` and `data_provider`
("radboud" / "karolinska"), `train_images/<image_id>.tiff` and `train_label_masks/<image_id>_mask.tiff`.
Masks are RGB pyramids of the same level-0 size as their slide with the label in the RED channel (green
and blue are ignored). Slides and masks are read lazily through `wsi.Slide`; every image in
`train_images` must have a `train.csv` row (its provider decides the schema); a slide without a mask is
yielded unlabeled (tissue None: about 100 of the 10,616 Kaggle slides have no mask).

Id mapping: red value -> the same id in the provider's schema:
- radboud -> `panda-radboud`: 0 background/unknown, 1 stroma, 2 benign epithelium, 3/4/5 Gleason 3/4/5;
- karolinska -> `panda-karolinska`: 0 background, 1 benign tissue, 2 cancerous tissue.
Values outside the schema (e.g. 3 in a Karolinska mask) are an error naming the mask file and the tile.
A dataset has one tissue schema, so a source reads one provider: `provider` picks it; left unset, the
slides present must all come from one provider (else a ValueError asks for `provider`).

Tiling: `size` px tiles at `mpp` (default 0.5) every `stride` px, kept when the slide's thumbnail tissue
mask (`wsi.TissueMap`) covers at least `min_tissue`; masks are resampled with nearest neighbor on the same
window. Level-0 mpp comes from the TIFF tags, else 0.5 (PANDA's stated 20x; Radboud and Karolinska scanners
differ slightly, UNCERTAIN). Provenance: slide_id = image_id, x/y = level-0 top-left, level read, actual mpp.

License: CC BY-NC-SA 4.0 (the Kaggle PANDA challenge data terms). Citation: Bulten et al., Nature Medicine 28, 2022.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from histosynth.classes import get_schema
from histosynth.errors import InputError
from histosynth.schema import Provenance, Sample
from histosynth.sources.base import Source, SourceMeta
from histosynth.sources.folder import format_error, require_folder, take
from histosynth.sources.wsi import Slide, check_slide_args, tissue_windows

DEFAULT_MPP = 0.5
SCHEMA_OF_PROVIDER = {"radboud": "panda-radboud", "karolinska": "panda-karolinska"}


def read_providers(csv_path: Path) -> dict[str, str]:
    """{image_id: provider} from PANDA's train.csv (`image_id`, `data_provider` columns)."""
    if not csv_path.is_file():
        raise format_error(csv_path, "PANDA train.csv not found")
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("image_id", "data_provider") if c not in (reader.fieldnames or [])]
            if missing:
                raise format_error(csv_path, f"missing column(s) {missing} (columns: {reader.fieldnames})")
            providers = {}
            for line, row in enumerate(reader, start=2):
                provider = (row["data_provider"] or "").strip().lower()
                if provider not in SCHEMA_OF_PROVIDER:
                    raise format_error(csv_path, f"line {line}: unknown data_provider {row['data_provider']!r} "
                                       f"(known: {sorted(SCHEMA_OF_PROVIDER)})")
                providers[row["image_id"].strip()] = provider
    except UnicodeDecodeError as err:
        raise format_error(csv_path, f"not a UTF-8 CSV file ({err})") from None
    return providers


class PandaSource(Source):
    """PANDA slides tiled at a requested mpp with their provider's Gleason / tissue label maps."""

    meta = SourceMeta(
        name="panda",
        description="PANDA: 10,616 prostate biopsy WSIs (20x) from Radboud and Karolinska with label masks; tiled",
        license="CC-BY-NC-SA-4.0",
        url="https://www.kaggle.com/c/prostate-cancer-grade-assessment",
        citation="Bulten et al., Artificial intelligence for diagnosis and Gleason grading of prostate cancer: the PANDA "
                 "challenge, Nature Medicine 28, 154-163, 2022",
        native_mpp=DEFAULT_MPP,
    )

    def __init__(self, path: str | Path, size: int = 256, mpp: float = 0.5, stride: int | None = None, min_tissue: float = 0.5,
                 n: int | None = None, provider: str | None = None) -> None:
        """PANDA's Kaggle folder `path`; `size` px tiles at `mpp` from the slides of `provider` ("radboud"/"karolinska")."""
        self.path = require_folder(Path(path), "train.csv, train_images/ and train_label_masks/")
        check_slide_args("panda", size, mpp, stride, min_tissue, n)
        if provider is not None and provider.lower() not in SCHEMA_OF_PROVIDER:
            raise InputError(f"panda: provider must be one of {sorted(SCHEMA_OF_PROVIDER)}, got {provider!r}")
        self.provider = provider.lower() if provider else None
        self.providers = read_providers(self.path / "train.csv")
        images = self.path / "train_images"
        if not images.is_dir():
            raise format_error(images, "PANDA train_images folder not found")
        present = sorted(images.glob("*.tiff"))
        if not present:
            raise format_error(images, "no PANDA slides (*.tiff) in the folder")
        for image in present:
            if image.stem not in self.providers:
                raise format_error(self.path / "train.csv", f"no row for image {image.stem!r} ({image}); its provider is unknown")
        if self.provider is None:
            found = sorted({self.providers[image.stem] for image in present})
            if len(found) > 1:
                raise InputError(f"panda: {self.path} holds slides of {' and '.join(found)}, whose label schemas differ; "
                                 f"pass provider= one of {found} (one dataset has one tissue schema)")
            self.provider = found[0] if found else None
        self.slides = [image for image in present if self.providers[image.stem] == self.provider]
        if len(self.slides) < len(present):
            self.skipped[f"slide(s) of another provider than {self.provider} (one dataset has one schema)"] += len(present) - len(self.slides)
        self.size, self.mpp, self.stride, self.min_tissue, self.n = size, mpp, stride, min_tissue, n
        self.meta = replace(type(self).meta, tissue_schema=SCHEMA_OF_PROVIDER[self.provider] if self.provider else None)

    def _slide_samples(self, image_path: Path) -> Iterator[Sample]:
        schema = get_schema(SCHEMA_OF_PROVIDER[self.providers[image_path.stem]])
        valid = schema.valid_ids(allow_ignore=False)
        mask_path = self.path / "train_label_masks" / f"{image_path.stem}_mask.tiff"
        with Slide(image_path, default_mpp=DEFAULT_MPP) as slide:
            mask = Slide(mask_path, default_mpp=slide.mpp) if mask_path.is_file() else None
            try:
                if mask is not None and (mask.width, mask.height) != (slide.width, slide.height):
                    raise format_error(mask_path, f"mask is {mask.width}x{mask.height} but slide {image_path.name} is "
                                       f"{slide.width}x{slide.height} at level 0")
                _, windows = tissue_windows(slide, self.size, self.mpp, self.stride, self.min_tissue, self.skipped)
                for window in windows:
                    image = slide.read(window, pad=True)[:, :, :3]
                    x, y = window.origin
                    labels = None
                    if mask is not None:
                        mask_window = replace(window, mpp=window.width / window.out_width * mask.mpp)
                        labels = np.ascontiguousarray(mask.read(mask_window, resample="nearest", pad=True, fill=0)[:, :, 0])
                        unknown = sorted(set(np.unique(labels).tolist()) - valid)
                        if unknown:
                            raise format_error(mask_path, f"red-channel values {unknown} in the tile at x={x}, y={y} are not ids "
                                               f"of schema {schema.name!r} (valid: {sorted(valid)})")
                    yield Sample(
                        image=np.ascontiguousarray(image),
                        provenance=Provenance("panda", image_path.stem, x=x, y=y, level=slide.window_level(window).index, mpp=window.mpp),
                        tissue=labels,
                        tissue_schema=schema.name if labels is not None else None,
                    )
            finally:
                if mask is not None:
                    mask.close()

    def _samples(self) -> Iterator[Sample]:
        for path in self.slides:
            yield from self._slide_samples(path)

    def __iter__(self) -> Iterator[Sample]:
        return take(self._samples(), self.n)
