"""The scorer's own steps on a submission's output, run in the sandbox with no plugin on the path:
`python -I -B -m histosynth.leaderboard.score_step validate|suite SPEC.json`.

validate: each output folder is walked (regular files only), its shards' footers are checked against row and
decompressed-size caps before any page is decoded, every row is validated as a Sample, the row count is checked, and
what the rows claim (generator, version, checkpoint hash) is written to claims.json for the host to judge.
suite: the histosynth-bench suite on the validated outputs; results files go to the spec's `out` folder.
Trusted code on untrusted bytes: running it sandboxed bounds its time and memory and contains a parser bug. Any
failure ends in one `error: ...` line on stderr (exit 2), which the report shows.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

from histosynth.errors import InputError, UserFacingError

EXIT_REFUSED = 2
SPLIT = "train"


def validate(spec: dict[str, Any]) -> dict[str, Any]:
    """Check each output folder of `spec["folders"]`; returns the claims and what the outputs carry."""
    from histosynth.benchmark.subjects import row_makers
    from histosynth.benchmark.suite import outputs_of
    from histosynth.disk import shard_paths
    from histosynth.hub import validate_folder
    from histosynth.leaderboard.identity import check_checkpoint_hash, check_name, check_version
    from histosynth.leaderboard.untrusted import ParquetCaps, check_parquet_caps, check_tree

    n, generator = spec.get("n"), spec.get("generator")
    claims: dict[str, Any] = {}
    for role, folder in sorted(spec["folders"].items()):
        folder = Path(folder)
        check_tree(folder, what=f"{role} set")
        caps = ParquetCaps(rows=n if n is not None else spec["max_rows"])
        check_parquet_caps(shard_paths(folder, SPLIT), caps)
        checked = validate_folder(folder, progress=False)
        rows = checked.split_sizes.get(SPLIT, 0)
        if n is not None and rows != n:
            raise InputError(f"{folder.name}: {rows} rows, {n} were asked for")
        makers = sorted({(g, v, c) for _, g, v, c in row_makers(folder, SPLIT)}, key=str)
        if generator is not None:
            if len(makers) != 1:
                raise InputError(f"{folder.name}: rows name {len(makers)} different generator checkpoints; a "
                                 "generator's output names exactly one")
            name, version, checkpoint = makers[0]
            if name != generator:
                raise InputError(f"{folder.name}: rows name generator {name!r}, not the submitted {generator!r}")
            check_name(name, f"{folder.name}: rows' generator")
            check_version(version, f"{folder.name}: rows' generator_version")
            check_checkpoint_hash(checkpoint, f"{folder.name}: rows' checkpoint_hash")
            claims[role] = {"generator": name, "version": version, "checkpoint_hash": checkpoint, "rows": rows}
        else:
            claims[role] = {"rows": rows, "makers": len(makers)}
    first = spec["folders"].get("synthesized") or spec["folders"].get("completed")
    outputs = outputs_of(Path(first))
    return {"claims": claims, "tissue": outputs.tissue, "nuclei": outputs.nuclei, "size": first_patch_size(Path(first))}


def first_patch_size(folder: Path) -> list[int]:
    """[height, width] in pixels of the first row's image of a dataset folder."""
    from histosynth.disk import iter_samples

    first = next(iter_samples(folder))
    return [int(n) for n in first.image.shape[:2]]


def suite(spec: dict[str, Any]) -> list[str]:
    """Run the suite on the validated outputs; returns the results files written."""
    from histosynth.benchmark.suite import Outputs, References, Variant, run_suite

    folders = spec["folders"]
    outputs = Outputs(Path(folders["synthesized"]) if "synthesized" in folders else None,
                      Path(folders["completed"]) if "completed" in folders else None,
                      tissue=spec["tissue"], nuclei=spec["nuclei"])
    refs = References(**{k: Path(v) for k, v in spec["refs"].items()})
    chosen = Variant(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["variant"].items()})
    written = run_suite(outputs, refs, chosen, Path(spec["out"]), log=lambda line: print(line, flush=True),
                        tasks=spec["tasks"])
    return [p.name for p in written]


def main(argv: list[str]) -> int:
    """argv: validate|suite SPEC.json; writes the step's answer to ANSWER next to the spec."""
    verb, spec_path = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    try:
        answer: Any = validate(spec) if verb == "validate" else suite(spec)
    except UserFacingError as err:
        print(f"error: {' '.join(str(err).split())[:500]}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as err:  # any other failure on untrusted bytes: one line for the report, traceback above it
        traceback.print_exc()
        print(f"error: {type(err).__name__}: {' '.join(str(err).split())[:500]}", file=sys.stderr)
        return 1
    Path(spec["answer"]).write_text(json.dumps(answer), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
