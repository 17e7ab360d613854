"""`histosynth data pseudolabel|sample`: give a dataset folder pseudo labels (histosynth.labels.pipeline) and keep
its heterogeneous patches (histosynth.labels.sampling)."""

from __future__ import annotations

import argparse
import shlex

from histosynth import options as opt
from histosynth.classes import MAX_PSEUDO_CLASSES


def parse_ks(text: str) -> tuple[int, ...]:
    """'5,10,20' -> (5, 10, 20); each k a number of pseudo tissue classes, 1..254 (a schema's ids 1..254: 0 is
    background and 255 ignore), so a k outside that range is refused here rather than skipped later."""
    number = opt.integer(-(10**20), 10**20, "an integer")
    try:
        ks = tuple(number(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError:
        ks = ()
    if not ks:
        raise argparse.ArgumentTypeError(f"expected comma-separated granularities such as 5,10,20, got {text[:80]!r}")
    wrong = [k for k in ks if not 1 <= k <= MAX_PSEUDO_CLASSES]
    if wrong:
        raise argparse.ArgumentTypeError(f"k={wrong[0]} is out of range: each k must be in [1, {MAX_PSEUDO_CLASSES}] "
                                         f"(a pseudo tissue schema has at most {MAX_PSEUDO_CLASSES} classes, ids "
                                         f"1-{MAX_PSEUDO_CLASSES}; 0 is background, 255 ignore)")
    return ks


def run_pseudolabel(args: argparse.Namespace) -> int:
    from histosynth.dataset import pseudolabel_lines, summary_lines
    from histosynth.labels.pipeline import SIDECAR, PseudolabelConfig, pseudolabel_dataset
    from histosynth.recipes.encoders import pseudolabel_encoder

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
    labeler, summary, stats = pseudolabel_dataset(args.path, args.out, config, args.cache,
                                                  encoder=pseudolabel_encoder(config.encoder), command=command,
                                                  overwrite=args.overwrite)
    print("\n".join(summary_lines(args.out, summary)))
    print("\n".join(pseudolabel_lines(labeler, stats)))
    print(f"  hierarchy and settings: {args.out / SIDECAR}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from histosynth.atomic import check_output
    from histosynth.dataset import summary_lines
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


def register(actions: argparse._SubParsersAction) -> None:
    """The `pseudolabel` and `sample` actions of `histosynth data`."""
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
    pseudo.add_argument("--nuclei-k", type=opt.integer(1, MAX_PSEUDO_CLASSES, "a number of classes"), default=4, help="number of pseudo nuclear classes (default 4)")
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
