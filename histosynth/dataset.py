"""Dataset folders from registered sources: `build_dataset` (what `histosynth data build` and a recipe's source step
run), the held-out completion masks as a dataset (`write_mask_dataset`), a drawn grid of a folder, and the summary
lines the CLI prints.

The pseudo-labeler needs an image encoder, which the benchmark loads; this layer does not import the benchmark, so a
caller that pseudo-labels passes a loader (`encoder`: name -> encoder), e.g. histosynth.recipes.encoders.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from histosynth.errors import InputError

if TYPE_CHECKING:
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import DatasetSummary
    from histosynth.labels.pipeline import PseudoLabeler
    from histosynth.labels.tissue import FeatureEncoder
    from histosynth.schema import Sample
    from histosynth.sources.base import SourceMeta
    from histosynth.splits import SplitSpec

EncoderLoader = Callable[[str], "FeatureEncoder"]

# Options `data build` passes to a source; a source that does not take a given option reports it.
SOURCE_OPTIONS = ("path", "annotations", "masks", "schema", "classes", "provider", "n", "size", "stride", "mpp", "seed",
                  "min_tissue", "label_components")
PSEUDOLABEL_KS = (5, 10, 20)  # granularities `data build` pseudo-labels at (use `data pseudolabel` for others)
MAX_LISTED = 12  # classes listed per label in summaries


@dataclass
class Built:
    """What `build_dataset` wrote: the dataset summary and, when it pseudo-labeled, the labeler and composition."""

    summary: DatasetSummary
    labeler: PseudoLabeler | None = None
    composition: dict | None = None


def build_dataset(source_name: str, out: Path, options: dict, overwrite: bool = True, pseudolabel: bool | None = None,
                  cache: Path | None = None, split: SplitSpec | None = None,
                  encoder: EncoderLoader | None = None) -> Built:
    """Write the samples of a registered source to `out` (Hub layout).

    With `pseudolabel` (default: the source's `pseudolabel_by_default`, true for `embedded`) unlabeled patches get
    pseudo tissue phenotypes at k = 5, 10, 20 and pseudo nuclei, exactly as `data pseudolabel` would give them;
    `encoder` then loads the labeler's encoder by name. With `split`, the folder holds `train` and `test` splits by
    slide or region (histosynth.splits).
    """
    from histosynth.data_cards.card import CardInfo
    from histosynth.data_cards.model import default_license
    from histosynth.disk import write_dataset
    from histosynth.sources import build_source
    from histosynth.sources.base import EmptySourceError, require_samples

    if options.get("n") == 0:
        raise EmptySourceError("--n 0: a dataset needs at least one sample")
    source = build_source(source_name, **options)
    meta = source.meta
    try:
        total = len(source)
    except TypeError:
        total = None
    pseudolabel = meta.pseudolabel_by_default if pseudolabel is None else pseudolabel
    command = "histosynth data build --source " + source_name + " " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {shlex.quote(str(v))}") for k, v in options.items() if v is not None
    ) + (" --pseudolabel" if pseudolabel else "") + f" --out {shlex.quote(str(out))}"
    real_data = source_name not in ("simulator", "embedded", "folder")
    source_datasets = [source_name] if real_data else []
    card = CardInfo(
        pretty_name=f"histosynth {source_name} patches" + (" (pseudo-labels)" if pseudolabel else ""),
        description=f"Patches from the `{source_name}` source: {meta.description}.",
        license=default_license(source_datasets) if real_data else _hub_license(meta.license),
        source_datasets=source_datasets,
        source=f"{meta.description}. {meta.citation} {meta.url}".strip(),
        command=command,
        tags=[source_name] + (["pseudo-labels"] if pseudolabel else []),
    )
    if split is not None:
        split.check()
        if pseudolabel:
            raise InputError("--split-by with --pseudolabel would fit the pseudo labels on the test patches too; build "
                             "the split first, then `data pseudolabel` the folder (it fits on the train split only)")
        command += f" --split-by {split.by} --test-fraction {split.test_fraction} --split-seed {split.seed}" + (
            f" --region-size {split.region_size}" if split.by == "region" else "")
        card.command = command
    if not pseudolabel:
        samples = require_samples(source, _input_of(source_name, options))
        if split is not None:
            return Built(_write_split_build(samples, out, card, meta, total, overwrite, split))
        return Built(write_dataset(samples, out, card, meta.tissue_schema, meta.nuclei_schema, total=total, overwrite=overwrite))
    if meta.tissue_schema is not None:
        raise InputError(f"source {source_name!r} already has tissue labels ({meta.tissue_schema}); --pseudolabel is for unlabeled sources")
    if encoder is None:
        raise ValueError("build_dataset: pseudo-labeling needs `encoder`, a function that loads an encoder by name "
                         "(e.g. histosynth.recipes.encoders.pseudolabel_encoder)")
    return _build_pseudolabeled(source_name, options, out, card, total, overwrite, cache, encoder)


def _hub_license(text: str) -> str:
    """A source's license as a Hub license id ("CC0-1.0" -> "cc0-1.0"); free text becomes "other"."""
    ident = text.strip().lower()
    return ident if ident and " " not in ident and ident.replace("-", "").replace(".", "").isalnum() else "other"


def _write_split_build(samples: Iterable[Sample], out: Path, card: CardInfo, meta: SourceMeta, total: int | None,
                       overwrite: bool, split: SplitSpec) -> DatasetSummary:
    """Write all samples to a hidden sibling, then `out` with train/test splits from it (groups need a full pass)."""
    import shutil

    from histosynth.disk import write_dataset
    from histosynth.splits import write_split

    if not overwrite and out.exists():
        from histosynth.errors import OutputExistsError

        raise OutputExistsError(f"{out.absolute()} already exists; refusing to overwrite it")
    staging = out.parent / f".{out.name}-unsplit"
    try:
        write_dataset(samples, staging, card, meta.tissue_schema, meta.nuclei_schema, total=total)
        return write_split(staging, out, card, split, meta.tissue_schema, meta.nuclei_schema, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _input_of(source_name: str, options: dict) -> str:
    """What a build read, for messages: its --path, else its --source."""
    return f"--path {options['path']}" if options.get("path") is not None else f"--source {source_name}"


def _build_pseudolabeled(source_name: str, options: dict, out: Path, card: CardInfo, total: int | None,
                         overwrite: bool, cache: Path | None, encoder: EncoderLoader) -> Built:
    import torch

    from histosynth.labels.pipeline import PseudolabelConfig, write_pseudolabeled
    from histosynth.sources import build_source
    from histosynth.sources.base import require_samples

    size = options.get("size") or 256
    config = PseudolabelConfig(ks=PSEUDOLABEL_KS, cell=max(16, size // 4), nuclei_k=4)
    card.description += (f" Pseudo labels: tissue phenotypes at k = {', '.join(map(str, PSEUDOLABEL_KS))} ({config.cell} px "
                         f"cells embedded with `{config.encoder}`, hierarchical k-means; the finest level is stored, the "
                         f"coarser ones are in pseudolabels.json) and pseudo nuclei (color deconvolution + watershed, "
                         f"{config.nuclei_k} clustered classes).")
    card.limitations = "Pseudo labels are unsupervised clusters, not annotations; see pseudolabels.json."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine one thread is several times faster than two contended ones
    try:
        labeler, summary, composition = write_pseudolabeled(
            lambda: {"train": require_samples(build_source(source_name, **options), _input_of(source_name, options))}, out, card, config,
            cache if cache is not None else out.parent / f".{out.name}-embeddings",
            encoder=encoder(config.encoder), total=total, overwrite=overwrite)
    finally:
        torch.set_num_threads(threads)
    return Built(summary, labeler, composition)


def write_mask_dataset(out: Path, n: int | None = None, size: int | None = None, dataset: Path | None = None,
                       split: str = "train", version: str | None = None, overwrite: bool = True) -> tuple[DatasetSummary, Any]:
    """Write the held-out completion masks (histosynth.masks) as a dataset folder whose row j carries mask j: alone
    (the image is the mask, white on black; `n` masks of side `size`) or on the first `n` patches of `dataset`.
    Returns the summary and the held-out set used."""
    from itertools import islice

    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import count_samples, iter_samples, read_metadata, write_dataset
    from histosynth.masks import HELDOUT_VERSION, heldout_mask_samples, heldout_set, with_heldout_masks

    held = heldout_set(version or HELDOUT_VERSION)  # an unknown version fails before anything is written
    card_license = "cc0-1.0"  # masks alone: generated here from a seed
    if dataset is None:
        if n is None or size is None:
            raise InputError("data masks: give --n and --size (or --dataset to mask a dataset's patches)")
        samples, what = heldout_mask_samples(n, size, held.version), "the masks drawn white on black"
    else:
        if size is not None:
            raise InputError("data masks: --size is for masks alone; with --dataset each mask takes its patch's size")
        card_license = read_metadata(dataset).get("license", "other")  # the patches keep their license
        available = count_samples(dataset, split)  # a missing split fails here, before writing
        if available == 0:
            raise InputError(f"{dataset}: split {split!r} has no patches to mask")
        n = available if n is None else min(n, available)
        samples = with_heldout_masks(islice(iter_samples(dataset, split), n), held.version)
        what = f"the patches of {dataset} ({split}), each with the held-out mask of its row"
    command = (f"histosynth data masks --version {held.version} --n {n}"
               + (f" --size {size}" if dataset is None else f" --dataset {shlex.quote(str(dataset))} --split {split}")
               + f" --out {shlex.quote(str(out))}")
    card = CardInfo(pretty_name=f"histosynth held-out completion masks {held.version}",
                    description=f"Completion masks of the standard held-out set {held.version} ({held.description}; "
                    f"seed {held.seed}; row j carries mask j, True = the region to fill): {what}.",
                    license=card_license, command=command,
                    tags=["completion-masks", f"heldout-masks-{held.version}"])
    return write_dataset({split: samples}, out, card, total=n, overwrite=overwrite), held


def show_dataset(path: Path, out: Path, n: int = 8, split: str = "train", columns: int = 4) -> Path:
    """Draw the first `n` samples of a dataset (with label overlays when labeled) to a PNG."""
    from itertools import islice

    from histosynth.disk import iter_samples, read_metadata
    from histosynth.viz import draw_grid

    meta = read_metadata(path)
    samples = list(islice(iter_samples(path, split), n))
    return draw_grid(samples, out, title=f"{meta.get('pretty_name', path)} — {path} ({split})", columns=columns)


def summary_lines(path: Path, summary: DatasetSummary) -> list[str]:
    """Human-readable summary of a written dataset."""
    from histosynth.classes import get_schema

    lines = [f"dataset: {path}"]
    lines += [f"  {split}: {n} samples" for split, n in summary.split_sizes.items()]
    sizes = ", ".join(f"{w}x{h} ({n})" for (h, w), n in sorted(summary.image_sizes.items()))
    lines.append(f"  patch sizes: {sizes or 'none'}")
    if summary.tissue_schema:
        schema = get_schema(summary.tissue_schema)
        total = sum(summary.tissue_pixels.values()) or 1
        parts = [f"{schema[i].name} {100 * n / total:.1f}%" for i, n in sorted(summary.tissue_pixels.items())]
        if len(parts) > MAX_LISTED:  # pseudo schemas have up to 254 classes: list the largest
            top = sorted(summary.tissue_pixels.items(), key=lambda item: -item[1])[:MAX_LISTED]
            parts = [f"{schema[i].name} {100 * n / total:.1f}%" for i, n in sorted(top)]
            parts.append(f"... {len(summary.tissue_pixels) - MAX_LISTED} more")
        lines.append(f"  tissue ({schema.name}): " + ", ".join(parts))
    else:
        lines.append("  tissue: not labeled")
    if summary.nuclei_schema:
        schema = get_schema(summary.nuclei_schema)
        parts = [f"{schema[i].name} {n}" for i, n in sorted(summary.nuclei_counts.items())]
        lines.append(f"  nuclei ({schema.name}): {sum(summary.nuclei_counts.values())} — " + ", ".join(parts))
    else:
        lines.append("  nuclei: not labeled")
    return lines


def pseudolabel_lines(labeler: PseudoLabeler, stats: dict[int, Any]) -> list[str]:
    """Human-readable report of a pseudo-labeling run (`stats`: k -> composition statistics)."""
    report = labeler.report
    lines = [f"  phenotypes: levels k={report['levels']} (stored: {labeler.tissue_schema})"
             + (f", skipped k={report['skipped_levels']} (only {report['distinct_cells']} distinct sampled cells)"
                if report["skipped_levels"] else ""),
             f"  cells: {report['tissue_cells']} tissue cells in {report['samples']} patches / {report['slides']} "
             f"slide(s), {report['sampled_cells']} kept by diversity sampling",
             f"  encoder: {labeler.embedder.encoder.meta.name} ({labeler.embedder.spec.key}); "
             f"{report['encoded_patches']} patches encoded, the rest from the cache ({report['cache']}: "
             f"{report.get('cache_stats', '')})"]
    if labeler.nuclei is not None:
        sizes = ", ".join(f"{c['id']}: {c['count']} nuclei ~{c['area_um2']} um2" for c in labeler.nuclei.describe())
        lines.append(f"  nuclei: {labeler.nuclei.schema} from {report['nuclei_fitted']} nuclei ({sizes})")
    for k, s in sorted(stats.items()):
        lines.append(f"  k={k}: {100 * s.fraction_heterogeneous:.1f}% of patches in 20-80%, mean H "
                     f"{(sum(s.entropy) / s.n if s.n else 0.0):.3f}")
    lines.append(f"  time: pass 1 {report['pass1_seconds']} s, fit {report['fit_seconds']} s, "
                 f"labeling + writing {report.get('pass2_seconds', 0)} s")
    return lines
