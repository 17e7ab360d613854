"""`histosynth data build|show|pseudolabel|sample|masks`: make an on-disk dataset from a source, draw it, give it
pseudo labels, sample its heterogeneous patches, and write the held-out completion masks. The work is done by
histosynth.dataset, histosynth.labels and histosynth.masks; this module and data_labels.py / data_masks.py parse the
options and print what was written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from histosynth import options as opt
from histosynth.errors import InputError


def run_build(args: argparse.Namespace) -> int:
    from histosynth.dataset import SOURCE_OPTIONS, build_dataset, pseudolabel_lines, summary_lines
    from histosynth.recipes.encoders import pseudolabel_encoder

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
                          cache=args.cache, split=split, encoder=pseudolabel_encoder)
    print("\n".join(summary_lines(args.out, built.summary)))
    if built.labeler is not None:
        print("\n".join(pseudolabel_lines(built.labeler, built.composition)))
    print(f"  written in {time.perf_counter() - start:.1f} s")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from histosynth.dataset import show_dataset

    out = show_dataset(args.path, args.out, args.n, args.split, args.columns)
    print(f"grid written to {out}")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    from histosynth.commands import data_labels, data_masks

    data = verbs.add_parser("data", help="build datasets from sources, draw, pseudo-label and sample them",
                            description="Build on-disk datasets (Hugging Face Hub layout) from registered sources, draw "
                            "them, give them pseudo labels and sample their heterogeneous patches.")
    actions = data.add_subparsers(dest="action", metavar="<action>", required=True)

    _add_build(actions)
    show = actions.add_parser("show", help="draw a dataset's patches with label overlays",
                              description="Draw the first patches of a dataset with tissue-map and nuclei overlays and a class legend.")
    show.add_argument("path", type=opt.existing_folder, help="dataset folder")
    show.add_argument("--out", type=opt.output_file, required=True, help="PNG file to write")
    show.add_argument("--n", type=opt.integer(1, 1000, "a count"), default=8, help="number of samples (default 8)")
    show.add_argument("--split", default="train", help="split to draw (default train)")
    show.add_argument("--columns", type=opt.integer(1, 100, "a count"), default=4, help="samples per row (default 4)")
    show.set_defaults(handler=run_show)
    data_labels.register(actions)
    data_masks.register(actions)


def _add_build(actions: argparse._SubParsersAction) -> None:
    from histosynth.sources import SOURCES
    from histosynth.splits import DEFAULT_REGION_SIZE, TEST_FRACTION_RANGE

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
