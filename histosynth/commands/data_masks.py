"""`histosynth data masks`: the held-out completion masks as a dataset folder (histosynth.dataset.write_mask_dataset)."""

from __future__ import annotations

import argparse

from histosynth import options as opt


def run_masks(args: argparse.Namespace) -> int:
    from histosynth.dataset import summary_lines, write_mask_dataset

    summary, held = write_mask_dataset(args.out, args.n, args.size, args.dataset, args.split, args.version,
                                       overwrite=args.overwrite)
    print("\n".join(summary_lines(args.out, summary)))
    print(f"  masks: held-out set {held.version} (seed {held.seed})")
    return 0


def register(actions: argparse._SubParsersAction) -> None:
    """The `masks` action of `histosynth data`."""
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
