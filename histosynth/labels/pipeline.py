"""Pseudo-label a stream of patches: pass 1 embeds, samples and fits; pass 2 labels and writes.

Pass 1 streams every sample once: the tissue cells are embedded (`CellEmbedder`) and the nuclei segmented, each
result stored in the content-addressed cache; embeddings go into per-slide pools that are thinned by k-center
greedy whenever they exceed 4 x `per_slide` (merge-and-reduce), so memory stays bounded per slide. Then the
phenotype hierarchy and the nuclear classes are fitted (fits are cached too, keyed by the ordered per-patch keys
and the settings). Pass 2 streams the samples again, reads each patch's embedding and segmentation back from the
cache, and writes the labeled samples. A run that crashes anywhere resumes from the cache on rerun: no patch is
embedded or segmented twice, and the output is the same as an uninterrupted run's.

The output dataset folder (written atomically, the sidecar with it) holds the usual README.md + data/ and
`pseudolabels.json`: settings, encoder provenance, the granularity hierarchy (fine -> coarse ids, so maps at every
k are recoverable from the stored finest map with `load_hierarchy(folder).coarsen(map, k)`), the nuclear classes
and the heterogeneity statistics at each granularity.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from histosynth.deprecated import renamed_names
from histosynth.disk import PSEUDOLABELS_SIDECAR
from histosynth.errors import InputError, MissingInputError
from histosynth.labels.cache import ArrayCache, content_key, default_cache_dir
from histosynth.labels.cluster import kcenter_greedy
from histosynth.labels.heterogeneity import CompositionStats, composition
from histosynth.labels.nuclei import (
    FEATURES,
    NucleiClusters,
    NucleiParams,
    fit_nuclei_clusters,
    nucleus_features,
    pseudo_nuclei,
    segment_nuclei,
)
from histosynth.labels.tissue import (
    GRANULARITIES,
    CellEmbedder,
    FeatureEncoder,
    Hierarchy,
    PhenotypeModel,
    fit_key,
    fit_phenotypes,
)
from histosynth.schema import Sample

if TYPE_CHECKING:
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import DatasetSummary

SIDECAR = PSEUDOLABELS_SIDECAR
NUCLEI_VERSION = "nuclei-v1"
POOL_SLACK = 4  # a slide's pool is thinned back to per_slide cells when it exceeds POOL_SLACK * per_slide


@dataclass(frozen=True)
class PseudolabelConfig:
    """Settings of a pseudo-labeling run (all of them end up in the sidecar)."""

    encoder: str = "effnet-lite0"
    ks: tuple[int, ...] = GRANULARITIES
    cell: int = 32
    input_size: int | None = None  # None: the encoder's own preprocessing
    per_slide: int = 1000
    min_cells_per_cluster: int = 1
    nuclei: bool = True
    nuclei_k: int = 4
    nuclei_params: NucleiParams = NucleiParams()
    seed: int = 0
    n_init: int = 4
    default_mpp: float = 0.5  # for samples whose provenance has no mpp
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.per_slide < 1:
            raise InputError(f"per_slide must be >= 1, got {self.per_slide}")
        if not 1 <= self.nuclei_k <= 254:
            raise InputError(f"nuclei_k must be within 1..254, got {self.nuclei_k}")
        if not self.ks:
            raise InputError("give at least one granularity k")


class _Pool:
    """Embeddings of one slide, thinned by k-center greedy to `cap` whenever they exceed POOL_SLACK * cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[np.ndarray] = []
        self.size = 0
        self.seen = 0

    def add(self, features: np.ndarray) -> None:
        if len(features):
            self.parts.append(features)
            self.size += len(features)
            self.seen += len(features)
        if self.size > POOL_SLACK * self.cap:
            self.reduce()

    def reduce(self) -> np.ndarray:
        x = np.concatenate(self.parts) if self.parts else np.zeros((0, 0), dtype=np.float32)
        if len(x) > self.cap:
            x = x[np.sort(kcenter_greedy(x, self.cap))]
        self.parts, self.size = [x], len(x)
        return x


class PseudoLabeler:
    """A fitted pseudo-labeler: phenotype hierarchy + nuclear classes + the embedder and cache they came from."""

    def __init__(self, config: PseudolabelConfig, tissue: PhenotypeModel, nuclei: NucleiClusters | None,
                 embedder: CellEmbedder, cache: ArrayCache, report: dict[str, Any]) -> None:
        self.config = config
        self.tissue = tissue
        self.nuclei = nuclei
        self.embedder = embedder
        self.cache = cache
        self.report = report

    @property
    def hierarchy(self) -> Hierarchy:
        return self.tissue.hierarchy

    @property
    def tissue_schema(self) -> str:
        return self.hierarchy.schema()

    @property
    def nuclei_schema(self) -> str | None:
        return self.nuclei.schema if self.nuclei is not None else None

    def label(self, sample: Sample) -> Sample:
        """The sample with a pseudo tissue map (finest k) and, if enabled, pseudo nuclei (replacing any labels)."""
        embedding = self.embedder.embed(sample.image)
        tissue = self.tissue.tissue_map(embedding, sample.image)
        nuclei = None
        if self.nuclei is not None:
            arrays = segment_cached(sample, self.config, self.cache)[0]
            nuclei = pseudo_nuclei(arrays["instances"].astype(np.int32), arrays["features"], self.nuclei)
        return Sample(image=sample.image, provenance=sample.provenance, tissue=tissue,
                      tissue_schema=self.tissue_schema, nuclei=nuclei, completion_mask=sample.completion_mask)

    def label_all(self, samples: Iterable[Sample], stats: dict[int, CompositionStats] | None = None) -> Iterator[Sample]:
        """Label a stream; when `stats` is given, record each map's composition at every granularity in it."""
        for sample in samples:
            out = self.label(sample)
            if stats is not None:
                for k in self.hierarchy.levels:
                    stats.setdefault(k, CompositionStats()).add(composition(self.hierarchy.coarsen(out.tissue, k)))
            yield out

    def sidecar(self, stats: dict[int, CompositionStats] | None = None) -> dict[str, Any]:
        """The JSON written next to the dataset: settings, provenance, hierarchy, nuclear classes, statistics."""
        from histosynth.data_cards.card import histosynth_version

        config = asdict(self.config)
        config["ks"] = list(self.config.ks)
        data: dict[str, Any] = {
            "format_version": 1,
            "histosynth_version": histosynth_version(),
            "config": config,
            "encoder": self.embedder.encoder.provenance() | {"preprocess": self.embedder.spec.key},
            "tissue": {
                "schema": self.tissue_schema,
                "levels": list(self.hierarchy.levels),
                "skipped": list(self.tissue.skipped),
                "hierarchy": self.hierarchy.to_json(),
                "cells_per_phenotype": self.tissue.counts.astype(int).tolist(),
                "background": "0 = glass (bright, unsaturated) pixels and cells; 255 unused",
                "curriculum": "histosynth.labels.curriculum.curriculum_k(step, total_steps, ks)",
            },
            "nuclei": None,
            "run": {k: v for k, v in self.report.items() if k != "cache"},  # no local paths in published files
        }
        if self.nuclei is not None:
            data["nuclei"] = {"schema": self.nuclei.schema, "k": self.nuclei.k, "classes": self.nuclei.describe(),
                              "features": "see histosynth.labels.nuclei.FEATURES"}
        if stats:
            data["heterogeneity"] = {
                str(k): {"patches": s.n, "fraction_in_20_80": round(s.fraction_heterogeneous, 4),
                         "mean_entropy": round(float(np.mean(s.entropy)), 4) if s.n else 0.0,
                         "largest_class_histogram": s.histogram().tolist()}
                for k, s in sorted(stats.items())
            }
        return data


def segment_cached(sample: Sample, config: PseudolabelConfig, cache: ArrayCache) -> tuple[dict[str, np.ndarray], str]:
    """(instances + features, cache key) of a sample's nuclei, segmented once and then read from the cache."""
    mpp = sample.provenance.mpp or config.default_mpp
    key = content_key(NUCLEI_VERSION, sample.image, float(mpp), config.nuclei_params.key())

    def compute() -> dict[str, np.ndarray]:
        instances = segment_nuclei(sample.image, mpp, config.nuclei_params)
        dtype = np.uint16 if instances.max(initial=0) <= np.iinfo(np.uint16).max else np.int32
        return {"instances": instances.astype(dtype), "features": nucleus_features(sample.image, instances, mpp)}

    return cache.get_or_compute(key, compute, compress=True), key


def fit_pseudolabeler(
    samples: Iterable[Sample], config: PseudolabelConfig = PseudolabelConfig(),
    cache: ArrayCache | Path | str | None = None, *, encoder: FeatureEncoder, total: int | None = None,
    progress: bool = True,
) -> PseudoLabeler:
    """Pass 1: embed and segment every sample (through the cache), sample cells per slide, fit both models.

    `encoder` is the caller's `config.encoder` (the labels layer does not load encoders).
    """
    if encoder.meta.name != config.encoder:
        raise ValueError(f"the encoder passed is {encoder.meta.name!r} but the config names {config.encoder!r}")
    start = time.perf_counter()
    if total is None:
        try:
            total = len(samples)  # type: ignore[arg-type]
        except TypeError:
            pass
    store = cache if isinstance(cache, ArrayCache) else ArrayCache(cache or default_cache_dir())
    embedder = CellEmbedder(encoder, config.cell, store, config.input_size, config.batch_size)
    pools: dict[str, _Pool] = {}
    tissue_digest, nuclei_digest = hashlib.sha256(), hashlib.sha256()
    nuclei_features: list[np.ndarray] = []
    n_samples = 0
    for sample in tqdm(samples, desc="pseudo-labels: embed cells" + (", segment nuclei" if config.nuclei else ""),
                       total=total, unit="patch", disable=not progress, leave=False):
        embedding = embedder.embed(sample.image)
        slide = sample.provenance.slide_id or sample.provenance.source
        tissue_digest.update(f"{embedding.key}|{slide}\n".encode())
        pools.setdefault(slide, _Pool(config.per_slide)).add(embedding.features)
        if config.nuclei:
            arrays, key = segment_cached(sample, config, store)
            nuclei_digest.update(f"{key}\n".encode())
            nuclei_features.append(arrays["features"])
        n_samples += 1
    if n_samples == 0:
        raise InputError("no samples to pseudo-label")
    embedded_s = time.perf_counter() - start

    key = fit_key(tissue_digest.hexdigest(), config.ks, config.per_slide, config.seed, config.min_cells_per_cluster,
                  config.n_init)
    per_slide = {slide: pool.seen for slide, pool in pools.items()}

    def fit_tissue() -> dict[str, np.ndarray]:
        parts = [p for p in (pool.reduce() for pool in pools.values()) if len(p)]
        cells = np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
        model = fit_phenotypes(cells, config.ks, config.seed, config.min_cells_per_cluster, config.n_init)
        return model.to_arrays() | {"sampled": np.asarray(len(cells)), "distinct": np.asarray(model.info["distinct_cells"])}

    arrays = store.get_or_compute(key, fit_tissue)
    tissue = PhenotypeModel.from_arrays(arrays, {"sampled_cells": int(arrays["sampled"]),
                                                 "distinct_cells": int(arrays["distinct"])})
    nuclei = None
    if config.nuclei:
        def fit_nuclei() -> dict[str, np.ndarray]:
            features = np.concatenate(nuclei_features) if nuclei_features else np.zeros((0, len(FEATURES)), np.float32)
            return fit_nuclei_clusters(features, config.nuclei_k, config.seed).to_arrays()

        nkey = content_key("nuclei-fit-v1", nuclei_digest.hexdigest(), config.nuclei_k, config.seed)
        nuclei = NucleiClusters.from_arrays(store.get_or_compute(nkey, fit_nuclei))
    report = {
        "samples": n_samples,
        "slides": len(pools),
        "tissue_cells": int(sum(per_slide.values())),
        "sampled_cells": tissue.info["sampled_cells"],
        "distinct_cells": tissue.info["distinct_cells"],
        "levels": list(tissue.hierarchy.levels),
        "skipped_levels": list(tissue.skipped),
        "nuclei_fitted": int(sum(len(f) for f in nuclei_features)),
        "encoded_patches": embedder.encoded_patches,
        "cache": str(store.root),
        "pass1_seconds": round(embedded_s, 2),
        "fit_seconds": round(time.perf_counter() - start - embedded_s, 2),
    }
    return PseudoLabeler(config, tissue, nuclei, embedder, store, report)


def write_pseudolabeled(
    make_splits: Callable[[], Mapping[str, Iterable[Sample]]], out: Path | str, card: "CardInfo",
    config: PseudolabelConfig = PseudolabelConfig(), cache: ArrayCache | Path | str | None = None, *,
    encoder: FeatureEncoder, total: int | None = None, progress: bool = True, overwrite: bool = True,
    fit_splits: Sequence[str] | None = None, fit_total: int | None = None,
) -> tuple[PseudoLabeler, "DatasetSummary", dict[int, CompositionStats]]:
    """Fit on the splits `fit_splits` of `make_splits()` (default: all), then write every split labeled to `out`
    with the sidecar, atomically.

    `make_splits` is called twice (one call per pass) and must give the same samples in the same order. Fitting on
    the training split only keeps the held-out patches out of the clusters their labels come from.
    """
    from histosynth.atomic import atomic_directory
    from histosynth.disk import write_dataset

    def chained() -> Iterator[Sample]:
        for name, iterable in make_splits().items():
            if fit_splits is None or name in fit_splits:
                yield from iterable

    labeler = fit_pseudolabeler(chained(), config, cache, encoder=encoder,
                                  total=total if fit_splits is None else fit_total, progress=progress)
    labeler.report["fitted_on_splits"] = sorted(make_splits()) if fit_splits is None else sorted(fit_splits)
    stats: dict[int, CompositionStats] = {}
    splits = {name: labeler.label_all(it, stats) for name, it in make_splits().items()}
    start = time.perf_counter()
    with atomic_directory(out, overwrite=overwrite) as folder:
        summary = write_dataset(splits, folder, card, labeler.tissue_schema, labeler.nuclei_schema,
                                total=total if len(splits) == 1 else None)
        labeler.report["pass2_seconds"] = round(time.perf_counter() - start, 2)
        labeler.report["cache_stats"] = labeler.cache.stats()
        text = compact_json(labeler.sidecar(stats))
        with open(Path(folder) / SIDECAR, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    return labeler, summary, stats


def compact_json(data: Any) -> str:
    """Indented JSON with lists of numbers kept on one line (the hierarchy has up to 254 ids per level)."""
    import re

    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s*([-0-9.eE+,\s]+?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)


def load_sidecar(folder: Path | str) -> dict[str, Any]:
    """The `pseudolabels.json` of a pseudo-labeled dataset folder."""
    path = Path(folder) / SIDECAR
    if not path.is_file():
        raise MissingInputError(f"{path}: missing; {folder} was not written by `histosynth data pseudolabel`")
    return json.loads(path.read_text(encoding="utf-8"))


def load_hierarchy(folder: Path | str) -> Hierarchy:
    """The granularity hierarchy of a pseudo-labeled dataset (to coarsen its maps to any stored k)."""
    return Hierarchy.from_json(load_sidecar(folder)["tissue"]["hierarchy"])


def dataset_splits(folder: Path | str) -> dict[str, int]:
    """Split name -> number of rows of a dataset folder (from its shard names and parquet footers)."""
    import re

    from histosynth.disk import DATA_DIR, count_samples, read_metadata

    read_metadata(folder)
    pattern = re.compile(r"^(.+)-\d{5}-of-\d{5}\.parquet$")
    names = sorted({m.group(1) for p in (Path(folder) / DATA_DIR).glob("*.parquet") if (m := pattern.match(p.name))})
    if not names:
        raise InputError(f"{folder}: no parquet shards under {DATA_DIR}/")
    ordered = (["train"] if "train" in names else []) + [n for n in names if n != "train"]
    return {name: count_samples(folder, name) for name in ordered}


def derived_card(source: Path | str, description: str, command: str, extra_tags: list[str]) -> "CardInfo":
    """A card for a dataset derived from the dataset folder `source` (license and sources carried over)."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import read_metadata

    meta = read_metadata(source)
    sources = [s for s in meta.get("source_datasets", []) if s != "original"]
    tags = [t for t in meta.get("tags", []) if t not in ("histopathology", "histosynth")]
    return CardInfo(
        pretty_name=f"{meta.get('pretty_name', Path(source).name)} ({', '.join(extra_tags)})",
        description=description,
        license=meta.get("license", "other"),
        source_datasets=sources,
        source=f"Derived from the histosynth dataset `{Path(source).name}` ({meta.get('pretty_name', '')}).",
        command=command,
        tags=tags + [t for t in extra_tags if t not in tags],
    )


def pseudolabel_dataset(
    source: Path | str, out: Path | str, config: PseudolabelConfig = PseudolabelConfig(),
    cache: ArrayCache | Path | str | None = None, *, encoder: FeatureEncoder, command: str = "",
    progress: bool = True, overwrite: bool = True,
) -> tuple[PseudoLabeler, "DatasetSummary", dict[int, CompositionStats]]:
    """Pseudo-label every split of the dataset folder `source` into a new dataset folder `out`.

    The labeler is fitted on the "train" split only when the folder also holds other splits (a `data build
    --split-by` folder), so held-out patches never shape the clusters; a single-split folder is fitted on itself.
    """
    from histosynth.disk import iter_samples

    counts = dataset_splits(source)
    fit = ["train"] if "train" in counts and len(counts) > 1 else None
    levels = ", ".join(str(k) for k in sorted(set(config.ks)))
    description = (
        f"The patches of `{Path(source).name}` with self-supervised pseudo labels: tissue phenotypes from "
        f"{config.cell} px cells embedded with `{config.encoder}`, diversity-sampled (at most {config.per_slide} "
        f"cells per slide) and clustered by hierarchical k-means (requested k: {levels}; the finest kept level is "
        "stored, the others are recoverable through the hierarchy in pseudolabels.json)"
        + (f"; nuclei from color deconvolution + watershed, {config.nuclei_k} clustered classes." if config.nuclei else ".")
    )
    card = derived_card(source, description, command, ["pseudo-labels"])
    card.limitations = ("Pseudo labels are unsupervised clusters, not annotations: phenotypes are appearance groups "
                        "of the encoder's features and nuclear classes are morphology/color groups; neither has a "
                        "fixed biological meaning, and nuclei touching in clumps can be merged or split.")
    return write_pseudolabeled(lambda: {name: iter_samples(source, name) for name in counts}, out, card, config,
                                cache, encoder=encoder, total=sum(counts.values()), progress=progress,
                                overwrite=overwrite, fit_splits=fit, fit_total=counts.get("train"))


# The British spellings of these names, for one release.
__getattr__ = renamed_names(__name__, {"PseudoLabeller": "PseudoLabeler", "fit_pseudolabeller": "fit_pseudolabeler",
                           "write_pseudolabelled": "write_pseudolabeled"}, globals())
