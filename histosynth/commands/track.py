"""`histosynth bench track build|ls`: the named benchmark tracks (histosynth.leaderboard.tracks)."""

from __future__ import annotations

import argparse
import json

from histosynth import options as opt


def run_build(args: argparse.Namespace) -> int:
    from histosynth.leaderboard.tracks import build_track, get_track
    from histosynth.recipes.spec import parse_inputs

    track = get_track(args.name, args.scale)
    folder = track.folder(args.out)
    hashes = build_track(track, folder, inputs=parse_inputs(args.input))
    print(f"track {track.name} ({track.scale}) built in {folder}: suite variant {track.variant}, {track.threads} "
          f"thread(s)")
    for name, digest in hashes.items():
        print(f"  {name}: {folder / track.sets[name]} (sha256 {digest[:16]}...)")
    print(f"score a submission on it: histosynth submit SUBMISSION.yaml --track {track.name}"
          f"{'' if args.out is None else f' --track-dir {folder}'} --results RESULTS")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    from histosynth.leaderboard.tracks import TRACKS, describe

    rows = [describe(TRACKS.get(name)) for name in TRACKS]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        needs = f"; needs --input {', '.join(row['inputs'])}" if row["inputs"] else ""
        print(f"{row['name']:14s} {row['summary']} (scale {row['scale']}, suite {row['variant']}, {row['threads']} "
              f"thread{'s' if row['threads'] != 1 else ''}{needs})")
    return 0


def register(tasks: argparse._SubParsersAction) -> None:
    """`bench track ...` under the bench verb's sub-commands."""
    track = tasks.add_parser("track", help="named benchmark tracks: fixed reference data, suite variant and threads",
                             description="A track fixes the reference sets (train, test, conditions), the suite "
                                         "variant and the thread count, and holds the reference rows and the "
                                         "real-data rows every submission is compared with, computed once. Build it "
                                         "once per machine; then `histosynth submit ... --track NAME`.")
    verbs = track.add_subparsers(dest="track_verb", metavar="<verb>", required=True)
    build = verbs.add_parser("build", help="build a track (its data, reference rows and reference cache)",
                             description="Build the track's data, score its reference rows and fill its reference "
                                         "cache in its folder (default: tracks/NAME-SCALE under the histosynth cache); "
                                         "a rerun finishes an interrupted build. The data's bytes are checked against "
                                         "the recorded ones (for real-data tracks, those of the first build).")
    build.add_argument("name", help="track name (histosynth bench track ls)")
    build.add_argument("--out", type=opt.output_folder, help="track folder (default: the histosynth cache)")
    build.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                       help="your copy of a real dataset, for the real-data tracks (e.g. camelyon16=/data/c16)")
    build.add_argument("--scale", choices=("tiny", "demo", "full"),
                       help="another scale than the track's own (tests: tiny); its hashes are recorded at build")
    build.set_defaults(handler=run_build)
    ls = verbs.add_parser("ls", help="list the tracks")
    ls.add_argument("--json", action="store_true", help="as JSON")
    ls.set_defaults(handler=run_ls)
