"""`histosynth data build|show`: make an on-disk dataset from a source, and draw it."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


# Options `data build` passes to a source; a source that does not take a given option reports it.
SOURCE_OPTIONS = ("path", "annotations", "masks", "schema", "classes", "provider", "n", "size", "stride", "mpp", "seed", "min_tissue")


def summary_lines(path: Path, summary) -> list[str]:
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
        lines.append(f"  tissue ({schema.name}): " + ", ".join(parts))
    else:
        lines.append("  tissue: not labelled")
    if summary.nuclei_schema:
        schema = get_schema(summary.nuclei_schema)
        parts = [f"{schema[i].name} {n}" for i, n in sorted(summary.nuclei_counts.items())]
        lines.append(f"  nuclei ({schema.name}): {sum(summary.nuclei_counts.values())} — " + ", ".join(parts))
    else:
        lines.append("  nuclei: not labelled")
    return lines


def _hub_licence(licence: str) -> str:
    """A source's licence as a Hub licence id ("CC0-1.0" -> "cc0-1.0"); free text becomes "other"."""
    ident = licence.strip().lower()
    return ident if ident and " " not in ident and ident.replace("-", "").replace(".", "").isalnum() else "other"


def build_dataset(source_name: str, out: Path, options: dict, overwrite: bool = True):
    """Write the samples of a registered source to `out` (Hub layout); returns the DatasetSummary."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.data_cards.model import default_licence
    from histosynth.disk import write_dataset
    from histosynth.sources import build_source

    source = build_source(source_name, **options)
    meta = source.meta
    try:
        total = len(source)
    except TypeError:
        total = None
    command = "histosynth data build --source " + source_name + " " + " ".join(
        f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in options.items() if v is not None
    ) + f" --out {shlex.quote(str(out))}"
    real_data = source_name not in ("simulator", "embedded", "folder")
    source_datasets = [source_name] if real_data else []
    card = CardInfo(
        pretty_name=f"histosynth {source_name} patches",
        description=f"Patches from the `{source_name}` source: {meta.description}.",
        license=default_licence(source_datasets) if real_data else _hub_licence(meta.licence),
        source_datasets=source_datasets,
        source=f"{meta.description}. {meta.citation} {meta.url}".strip(),
        command=command,
        tags=[source_name],
    )
    return write_dataset(source, out, card, meta.tissue_schema, meta.nuclei_schema, total=total, overwrite=overwrite)


def run_build(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    options = {name: getattr(args, name) for name in SOURCE_OPTIONS}
    summary = build_dataset(args.source, args.out, options, overwrite=args.overwrite)
    print("\n".join(summary_lines(args.out, summary)))
    print(f"  written in {time.perf_counter() - start:.1f} s")
    return 0


def show_dataset(path: Path, out: Path, n: int = 8, split: str = "train", columns: int = 4) -> Path:
    """Draw the first `n` samples of a dataset (with label overlays when labelled) to a PNG."""
    from itertools import islice

    from histosynth.disk import iter_samples, read_metadata
    from histosynth.viz import draw_grid

    meta = read_metadata(path)
    samples = list(islice(iter_samples(path, split), n))
    return draw_grid(samples, out, title=f"{meta.get('pretty_name', path)} — {path} ({split})", columns=columns)


def run_show(args: argparse.Namespace) -> int:
    out = show_dataset(args.path, args.out, args.n, args.split, args.columns)
    print(f"grid written to {out}")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    from histosynth.sources import SOURCES

    data = verbs.add_parser("data", help="build datasets from sources, draw them",
                            description="Build on-disk datasets (Hugging Face Hub layout) from registered sources, and draw them.")
    actions = data.add_subparsers(dest="action", metavar="<action>", required=True)

    build = actions.add_parser("build", help="write a source's patches as a dataset folder",
                               description="Write the patches of a registered source as a dataset folder "
                               "(README.md card + data/<split>-NNNNN-of-NNNNN.parquet) that "
                               "datasets.load_dataset(folder) loads. The folder appears complete or not at all.")
    build.add_argument("--source", required=True, choices=list(SOURCES), help="registered source (see `histosynth ls sources`)")
    build.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    build.add_argument("--path", type=Path, help="the source's data: a PanNuke fold, a Lizard/CoNSeP/MoNuSAC folder, slides, images")
    build.add_argument("--annotations", type=Path, help="Camelyon16: folder of ASAP XML annotations")
    build.add_argument("--masks", type=Path, help="folder source: masks with the same file stems (uint8 class ids)")
    build.add_argument("--schema", help="folder source: class schema of the masks (see `histosynth ls schemas`)")
    build.add_argument("--classes", help="CoNSeP: consep (7 classes) or consep-4 (merged)")
    build.add_argument("--provider", help="PANDA: radboud or karolinska")
    build.add_argument("--stride", type=int, help="tiling stride in pixels (default: the patch size)")
    build.add_argument("--n", type=int, help="number of patches (simulator) or at most this many (real sources)")
    build.add_argument("--size", type=int, help="patch size in pixels (default 256)")
    build.add_argument("--mpp", type=float, help="microns per pixel to tile at (default 0.5, about 20x)")
    build.add_argument("--seed", type=int, help="random seed (simulator)")
    build.add_argument("--min-tissue", type=float, help="minimum tissue fraction of a kept tile (real slides, default 0.5)")
    build.add_argument("--no-overwrite", dest="overwrite", action="store_false", help="refuse to replace an existing folder")
    build.set_defaults(handler=run_build)

    show = actions.add_parser("show", help="draw a dataset's patches with label overlays",
                              description="Draw the first patches of a dataset with tissue-map and nuclei overlays and a class legend.")
    show.add_argument("path", type=Path, help="dataset folder")
    show.add_argument("--out", type=Path, required=True, help="PNG file to write")
    show.add_argument("--n", type=int, default=8, help="number of samples (default 8)")
    show.add_argument("--split", default="train", help="split to draw (default train)")
    show.add_argument("--columns", type=int, default=4, help="samples per row (default 4)")
    show.set_defaults(handler=run_show)
