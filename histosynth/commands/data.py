"""`histosynth data build|show|pseudolabel|sample|masks`: make an on-disk dataset from a source, draw it, give it
pseudo labels, sample its heterogeneous patches, and write the held-out completion masks."""

from __future__ import annotations

import argparse
import shlex
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from histosynth import options as opt
from histosynth.errors import InputError

if TYPE_CHECKING:
    from histosynth.benchmark.encoders import Encoder
    from histosynth.disk import DatasetSummary
    from histosynth.labels.pipeline import PseudoLabeller
    from histosynth.splits import SplitSpec


# Options `data build` passes to a source; a source that does not take a given option reports it.
SOURCE_OPTIONS = ("path", "annotations", "masks", "schema", "classes", "provider", "n", "size", "stride", "mpp", "seed", "min_tissue",
                  "label_components")


MAX_LISTED = 12  # classes listed per label in summaries


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


def _hub_licence(licence: str) -> str:
    """A source's license as a Hub license id ("CC0-1.0" -> "cc0-1.0"); free text becomes "other"."""
    ident = licence.strip().lower()
    return ident if ident and " " not in ident and ident.replace("-", "").replace(".", "").isalnum() else "other"


@dataclass
class Built:
    """What `build_dataset` wrote: the dataset summary and, when it pseudo-labeled, the labeler and composition."""

    summary: "DatasetSummary"
    labeller: "PseudoLabeller | None" = None
    composition: dict | None = None


MAX_CLASSES = 254  # classes of a pseudo schema (ids 1..254; 0 background, 255 ignore)
PSEUDOLABEL_KS = (5, 10, 20)  # granularities `data build` pseudo-labels at (use `data pseudolabel` for others)


@lru_cache(maxsize=4)
def pseudolabel_encoder(name: str) -> Encoder:
    """The encoder `name` that the pseudo-labeler is given, loaded once per process (`demo` labels several sets)."""
    from histosynth.benchmark.encoders import load_encoder

    return load_encoder(name)


def build_dataset(source_name: str, out: Path, options: dict, overwrite: bool = True, pseudolabel: bool | None = None,
                  cache: Path | None = None, split: SplitSpec | None = None) -> Built:
    """Write the samples of a registered source to `out` (Hub layout).

    With `pseudolabel` (default: the source's `pseudolabel_by_default`, true for `embedded`) unlabeled patches get
    pseudo tissue phenotypes at k = 5, 10, 20 and pseudo nuclei, exactly as `data pseudolabel` would give them.
    With `split`, the folder holds `train` and `test` splits by slide or region (histosynth.splits).
    """
    from histosynth.data_cards.card import CardInfo
    from histosynth.data_cards.model import default_licence
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
        license=default_licence(source_datasets) if real_data else _hub_licence(meta.licence),
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
    return _build_pseudolabelled(source_name, options, out, card, total, overwrite, cache)


def _write_split_build(samples, out: Path, card, meta, total: int | None, overwrite: bool, split: SplitSpec):
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


def _build_pseudolabelled(source_name: str, options: dict, out: Path, card, total: int | None, overwrite: bool,
                          cache: Path | None) -> Built:
    import torch

    from histosynth.labels.pipeline import PseudolabelConfig, write_pseudolabelled
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
    torch.set_num_threads(1)  # measured on a shared 2-core machine: one thread 3-10x faster than two contended ones
    try:
        labeller, summary, composition = write_pseudolabelled(
            lambda: {"train": require_samples(build_source(source_name, **options), _input_of(source_name, options))}, out, card, config,
            cache if cache is not None else out.parent / f".{out.name}-embeddings",
            encoder=pseudolabel_encoder(config.encoder), total=total, overwrite=overwrite)
    finally:
        torch.set_num_threads(threads)
    return Built(summary, labeller, composition)


def run_build(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    options = {name: getattr(args, name) for name in SOURCE_OPTIONS}
    split = None
    if args.split_by is not None:
        from histosynth.splits import SplitSpec

        split = SplitSpec(args.split_by, 0.25 if args.test_fraction is None else args.test_fraction, args.split_seed,
                          args.region_size)
    elif args.test_fraction is not None:
        raise InputError("--test-fraction needs --split-by slide|region")
    built = build_dataset(args.source, args.out, options, overwrite=args.overwrite, pseudolabel=args.pseudolabel,
                          cache=args.cache, split=split)
    print("\n".join(summary_lines(args.out, built.summary)))
    if built.labeller is not None:
        print("\n".join(pseudolabel_lines(built.labeller, built.composition)))
    print(f"  written in {time.perf_counter() - start:.1f} s")
    return 0


def show_dataset(path: Path, out: Path, n: int = 8, split: str = "train", columns: int = 4) -> Path:
    """Draw the first `n` samples of a dataset (with label overlays when labeled) to a PNG."""
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


def parse_ks(text: str) -> tuple[int, ...]:
    """'5,10,20' -> (5, 10, 20)."""
    level = opt.integer(1, MAX_CLASSES, "a granularity")
    try:
        ks = tuple(level(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated granularities in [1, {MAX_CLASSES}] such as "
                                         f"5,10,20, got {text[:80]!r}") from None
    if not ks:
        raise argparse.ArgumentTypeError(f"expected comma-separated granularities such as 5,10,20, got {text[:80]!r}")
    return ks


def pseudolabel_lines(labeller, stats) -> list[str]:
    """Human-readable report of a pseudo-labeling run."""
    report = labeller.report
    lines = [f"  phenotypes: levels k={report['levels']} (stored: {labeller.tissue_schema})"
             + (f", skipped k={report['skipped_levels']} (only {report['distinct_cells']} distinct sampled cells)"
                if report["skipped_levels"] else ""),
             f"  cells: {report['tissue_cells']} tissue cells in {report['samples']} patches / {report['slides']} "
             f"slide(s), {report['sampled_cells']} kept by diversity sampling",
             f"  encoder: {labeller.embedder.encoder.meta.name} ({labeller.embedder.spec.key}); "
             f"{report['encoded_patches']} patches encoded, the rest from the cache ({report['cache']}: "
             f"{report.get('cache_stats', '')})"]
    if labeller.nuclei is not None:
        sizes = ", ".join(f"{c['id']}: {c['count']} nuclei ~{c['area_um2']} um2" for c in labeller.nuclei.describe())
        lines.append(f"  nuclei: {labeller.nuclei.schema} from {report['nuclei_fitted']} nuclei ({sizes})")
    for k, s in sorted(stats.items()):
        lines.append(f"  k={k}: {100 * s.fraction_heterogeneous:.1f}% of patches in 20-80%, mean H "
                     f"{(sum(s.entropy) / s.n if s.n else 0.0):.3f}")
    lines.append(f"  time: pass 1 {report['pass1_seconds']} s, fit {report['fit_seconds']} s, "
                 f"labeling + writing {report.get('pass2_seconds', 0)} s")
    return lines


def run_pseudolabel(args: argparse.Namespace) -> int:
    from histosynth.labels.pipeline import SIDECAR, PseudolabelConfig, pseudolabel_dataset

    config = PseudolabelConfig(encoder=args.encoder, ks=args.k, cell=args.cell, input_size=args.input_size,
                               per_slide=args.per_slide, min_cells_per_cluster=args.min_cells_per_cluster,
                               nuclei=args.nuclei, nuclei_k=args.nuclei_k, seed=args.seed)
    command = " ".join(["histosynth data pseudolabel", shlex.quote(str(args.path)), "--encoder", args.encoder,
                        "--k", ",".join(map(str, args.k)), "--cell", str(args.cell)]
                       + (["--input-size", str(args.input_size)] if args.input_size else [])
                       + ([f"--nuclei-k {args.nuclei_k}"] if args.nuclei else ["--no-nuclei"])
                       + ["--out", shlex.quote(str(args.out))])
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    labeller, summary, stats = pseudolabel_dataset(args.path, args.out, config, args.cache,
                                                   encoder=pseudolabel_encoder(config.encoder), command=command,
                                                   overwrite=args.overwrite)
    print("\n".join(summary_lines(args.out, summary)))
    print("\n".join(pseudolabel_lines(labeller, stats)))
    print(f"  hierarchy and settings: {args.out / SIDECAR}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from histosynth.atomic import check_output
    from histosynth.labels.heterogeneity import save_composition_plot
    from histosynth.labels.sampling import sample_dataset

    command = (f"histosynth data sample {shlex.quote(str(args.path))} --min-frac {args.min_frac} --max-frac "
               f"{args.max_frac} --min-tissue {args.min_tissue}"
               + (f" --by-entropy {args.by_entropy} --seed {args.seed}" if args.by_entropy is not None else "")
               + f" --out {shlex.quote(str(args.out))}")
    result = sample_dataset(args.path, args.out, args.min_frac, args.max_frac, args.min_tissue, args.by_entropy,
                            args.seed, args.power, command=command, overwrite=args.overwrite)
    plot = args.plot or args.out.parent / f"{args.out.name}-composition.png"
    check_output(plot, folder=False, what="--plot")
    save_composition_plot({"input": result.input_stats, "sampled": result.selected_stats}, plot,
                          title=f"composition of {args.path.name} and of the sample")
    print("\n".join(result.input_stats.lines("input patches")))
    print("\n".join(result.selected_stats.lines("sampled patches")))
    print("\n".join(summary_lines(args.out, result.summary)))
    print(f"  composition histogram: {plot}")
    return 0


def run_masks(args: argparse.Namespace) -> int:
    from itertools import islice

    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import count_samples, iter_samples, read_metadata, write_dataset
    from histosynth.masks import HELDOUT_VERSION, heldout_mask_samples, heldout_set, with_heldout_masks

    held = heldout_set(args.version or HELDOUT_VERSION)  # an unknown version fails before anything is written
    licence = "cc0-1.0"  # masks alone: generated here from a seed
    if args.dataset is None:
        if args.n is None or args.size is None:
            raise InputError("data masks: give --n and --size (or --dataset to mask a dataset's patches)")
        n = args.n
        samples, what = heldout_mask_samples(args.n, args.size, held.version), "the masks drawn white on black"
    else:
        if args.size is not None:
            raise InputError("data masks: --size is for masks alone; with --dataset each mask takes its patch's size")
        licence = read_metadata(args.dataset).get("license", "other")  # the patches keep their license
        available = count_samples(args.dataset, args.split)  # a missing split fails here, before writing
        if available == 0:
            raise InputError(f"{args.dataset}: split {args.split!r} has no patches to mask")
        n = available if args.n is None else min(args.n, available)
        samples = with_heldout_masks(islice(iter_samples(args.dataset, args.split), n), held.version)
        what = f"the patches of {args.dataset} ({args.split}), each with the held-out mask of its row"
    command = (f"histosynth data masks --version {held.version} --n {n}"
               + (f" --size {args.size}" if args.dataset is None else
                  f" --dataset {shlex.quote(str(args.dataset))} --split {args.split}")
               + f" --out {shlex.quote(str(args.out))}")
    card = CardInfo(pretty_name=f"histosynth held-out completion masks {held.version}",
                    description=f"Completion masks of the standard held-out set {held.version} ({held.description}; "
                    f"seed {held.seed}; row j carries mask j, True = the region to fill): {what}.",
                    license=licence, command=command,
                    tags=["completion-masks", f"heldout-masks-{held.version}"])
    summary = write_dataset({args.split: samples}, args.out, card, total=n, overwrite=args.overwrite)
    print("\n".join(summary_lines(args.out, summary)))
    print(f"  masks: held-out set {held.version} (seed {held.seed})")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    from histosynth.sources import SOURCES
    from histosynth.splits import DEFAULT_REGION_SIZE, TEST_FRACTION_RANGE

    data = verbs.add_parser("data", help="build datasets from sources, draw, pseudo-label and sample them",
                            description="Build on-disk datasets (Hugging Face Hub layout) from registered sources, draw "
                            "them, give them pseudo labels and sample their heterogeneous patches.")
    actions = data.add_subparsers(dest="action", metavar="<action>", required=True)

    build = actions.add_parser("build", help="write a source's patches as a dataset folder",
                               description="Write the patches of a registered source as a dataset folder "
                               "(README.md card + data/<split>-NNNNN-of-NNNNN.parquet) that "
                               "datasets.load_dataset(folder) loads. The folder appears complete or not at all.")
    build.add_argument("--source", required=True, choices=list(SOURCES), help="registered source (see `histosynth ls sources`)")
    build.add_argument("--out", required=True, type=opt.output_folder, help="dataset folder to write")
    build.add_argument("--path", type=Path, help="the source's data: a PanNuke fold, a Lizard/CoNSeP/MoNuSAC folder, slides, images")
    build.add_argument("--annotations", type=Path, help="Camelyon16: folder of ASAP XML annotations")
    build.add_argument("--masks", type=Path, help="folder source: masks with the same file stems (uint8 class ids)")
    build.add_argument("--schema", help="folder source: class schema of the masks (see `histosynth ls schemas`)")
    build.add_argument("--classes", help="CoNSeP: consep (7 classes) or consep-4 (merged)")
    build.add_argument("--provider", help="PANDA: radboud or karolinska")
    build.add_argument("--stride", type=opt.integer(1, opt.MAX_SIDE, "a stride in pixels"),
                       help="tiling stride in pixels (default: the patch size)")
    build.add_argument("--pseudolabel", action=argparse.BooleanOptionalAction, default=None,
                       help="give unlabeled patches pseudo tissue phenotypes (k=5,10,20) and pseudo nuclei "
                       "(default: on for `embedded`, off otherwise)")
    build.add_argument("--cache", type=opt.output_folder, help="embedding cache for --pseudolabel (default: a hidden folder beside --out)")
    build.add_argument("--n", type=opt.integer(0, opt.MAX_COUNT, "a count"),
                       help="number of patches (simulator) or at most this many (real sources)")
    build.add_argument("--size", type=opt.patch_side, help="patch size in pixels (default 256)")
    build.add_argument("--mpp", type=opt.number(0.01, 100.0), help="microns per pixel to tile at (default 0.5, about 20x)")
    build.add_argument("--seed", type=opt.seed, help="random seed (simulator)")
    build.add_argument("--min-tissue", type=opt.fraction, help="minimum tissue fraction of a kept tile (real slides, default 0.5)")
    build.add_argument("--label-components", action="store_true", default=None,
                       help="PanNuke: masks whose ids mark classes, not nuclei (binary per-class channels): make each "
                       "connected blob one nucleus (touching nuclei of a class stay merged)")
    build.add_argument("--split-by", choices=["slide", "region"], help="write train and test splits with no slide "
                       "(or region: a square block of a slide, --region-size level-0 px) in both")
    build.add_argument("--test-fraction", type=opt.number(*TEST_FRACTION_RANGE),
                       help="share of samples in the test split with --split-by, in [%g, %g] (default 0.25)" % TEST_FRACTION_RANGE)
    build.add_argument("--split-seed", type=opt.seed, default=0, help="seed of the shuffle of slides/regions (default 0)")
    build.add_argument("--region-size", type=opt.integer(1, 10**7, "a side in level-0 pixels"), default=DEFAULT_REGION_SIZE,
                       help=f"side of a region in level-0 pixels (default {DEFAULT_REGION_SIZE})")
    build.add_argument("--no-overwrite", dest="overwrite", action="store_false", help="refuse to replace an existing folder")
    build.set_defaults(handler=run_build)

    show = actions.add_parser("show", help="draw a dataset's patches with label overlays",
                              description="Draw the first patches of a dataset with tissue-map and nuclei overlays and a class legend.")
    show.add_argument("path", type=opt.existing_folder, help="dataset folder")
    show.add_argument("--out", type=opt.output_file, required=True, help="PNG file to write")
    show.add_argument("--n", type=opt.integer(1, 1000, "a count"), default=8, help="number of samples (default 8)")
    show.add_argument("--split", default="train", help="split to draw (default train)")
    show.add_argument("--columns", type=opt.integer(1, 100, "a count"), default=4, help="samples per row (default 4)")
    show.set_defaults(handler=run_show)

    pseudo = actions.add_parser(
        "pseudolabel", help="give a dataset self-supervised tissue phenotypes and nuclei",
        description="Write a copy of a dataset folder whose patches carry pseudo labels: tissue phenotype maps "
        "(cells embedded with an encoder, diversity-sampled per slide, hierarchical k-means; the finest feasible k "
        "is stored and the coarser ones are recoverable through pseudolabels.json) and pseudo nuclei (color "
        "deconvolution + watershed, clustered classes). Embeddings and segmentations are cached by content hash, "
        "so an interrupted run resumes where it stopped.")
    pseudo.add_argument("path", type=opt.existing_folder, help="dataset folder to label")
    pseudo.add_argument("--out", type=opt.output_folder, required=True, help="dataset folder to write")
    pseudo.add_argument("--encoder", default="effnet-lite0", help="registered encoder (default effnet-lite0)")
    pseudo.add_argument("--k", type=parse_ks, default=(5, 10, 20, 50, 100),
                        help="granularities, comma-separated (default 5,10,20,50,100; those the data cannot "
                        "support are skipped and reported)")
    pseudo.add_argument("--cell", type=opt.patch_side, default=32, help="cell size in pixels (default 32)")
    pseudo.add_argument("--input-size", type=opt.patch_side, help="feed cells at this size instead of the encoder's own "
                        "(convolutional encoders; faster, coarser phenotypes)")
    pseudo.add_argument("--per-slide", type=opt.count, default=1000, help="cells kept per slide by diversity sampling (default 1000)")
    pseudo.add_argument("--min-cells-per-cluster", type=opt.count, default=1,
                        help="skip k above distinct sampled cells / this (default 1)")
    pseudo.add_argument("--nuclei", action=argparse.BooleanOptionalAction, default=True,
                        help="also detect and classify nuclei (default: yes)")
    pseudo.add_argument("--nuclei-k", type=opt.integer(1, MAX_CLASSES, "a number of classes"), default=4, help="number of pseudo nuclear classes (default 4)")
    pseudo.add_argument("--cache", type=opt.output_folder, help="embedding cache folder (default labels/ under "
                        "$HISTOSYNTH_CACHE, else $XDG_CACHE_HOME/histosynth, else ~/.cache/histosynth)")
    pseudo.add_argument("--seed", type=opt.seed, default=0, help="k-means seed (default 0)")
    pseudo.add_argument("--threads", type=opt.threads, help="torch CPU threads for the encoder (on a busy machine 1 can be "
                        "several times faster than contended threads)")
    pseudo.add_argument("--no-overwrite", dest="overwrite", action="store_false", help="refuse to replace an existing folder")
    pseudo.set_defaults(handler=run_pseudolabel)

    sample = actions.add_parser(
        "sample", help="keep a dataset's heterogeneous patches (HTD 20-80%% rule or entropy sampling)",
        description="Write the heterogeneous patches of a dataset with tissue maps: by default those with at least "
        "two classes, the largest at most --max-frac and the second at least --min-frac of the tissue, and at least "
        "--min-tissue tissue; with --by-entropy N, N patches drawn with probability proportional to the "
        "tissue-diversity entropy H. Prints the composition statistics and draws their histogram.")
    sample.add_argument("path", type=opt.existing_folder, help="dataset folder with tissue maps")
    sample.add_argument("--out", type=opt.output_folder, required=True, help="dataset folder to write")
    sample.add_argument("--min-frac", type=opt.fraction, default=0.2, help="second-largest class at least this (default 0.2)")
    sample.add_argument("--max-frac", type=opt.fraction, default=0.8, help="largest class at most this (default 0.8)")
    sample.add_argument("--min-tissue", type=opt.fraction, default=0.5, help="tissue fraction of the patch at least this (default 0.5)")
    sample.add_argument("--by-entropy", type=opt.count, metavar="N", help="draw N patches weighted by entropy instead")
    sample.add_argument("--power", type=opt.number(0.0, 100.0), default=1.0, help="entropy weights are H^power (default 1)")
    sample.add_argument("--seed", type=opt.seed, default=0, help="seed of the entropy draw (default 0)")
    sample.add_argument("--plot", type=opt.output_file, help="composition histogram PNG (default OUT-composition.png beside OUT)")
    sample.add_argument("--no-overwrite", dest="overwrite", action="store_false", help="refuse to replace an existing folder")
    sample.set_defaults(handler=run_sample)

    masks = actions.add_parser(
        "masks", help="write the standard held-out completion masks as a dataset folder",
        description="Write the held-out completion masks (Palette's hybrid box + brush masks scaled to the patch; "
        "histosynth.masks) as a dataset folder whose row j carries mask j as completion_mask: alone (the image is "
        "the mask, white on black) with --n and --size, or on the patches of --dataset.")
    masks.add_argument("--out", type=opt.output_folder, required=True, help="dataset folder to write")
    masks.add_argument("--n", type=opt.count, help=f"number of masks, at most {opt.MAX_COUNT} (with --dataset: first N "
                       "patches; default all)")
    masks.add_argument("--size", type=opt.patch_side, help="patch side in pixels (without --dataset)")
    masks.add_argument("--dataset", type=opt.existing_folder, help="dataset folder whose patches get the masks")
    masks.add_argument("--split", default="train", help="split of --dataset to read and of OUT to write (default train)")
    masks.add_argument("--version", help="held-out mask set version (default: the current one, v1)")
    masks.add_argument("--no-overwrite", dest="overwrite", action="store_false", help="refuse to replace an existing folder")
    masks.set_defaults(handler=run_masks)
