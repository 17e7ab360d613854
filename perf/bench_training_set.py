"""Memory of HTD's training set: in RAM (stacked arrays) versus spilled to memory-mapped files, at N and 4N.

Each measurement runs in a fresh process: it loads the first N patches of a dataset folder at the model
resolution, then draws 200 random training batches (what the trainer does every step) and reports the time per
batch, so the cost of reading through the page cache is seen beside the memory saved. Memory is read from
/proc/self/status at the end: RssAnon (private memory, which only the process can give back) is what must stay
flat; RssFile counts the mapped file pages the batches touched, which the kernel can drop and re-read at will;
VmHWM is the peak of both. The spill is measured cold (written in the same process) and warm (reused, as a
resumed run does).

Run: .venv/bin/python perf/bench_training_set.py --data /tmp/perf1000/real-1000 --n 250,1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = """
import json, sys, time
import accelerate, numpy as np  # both modes pay for torch + accelerate, so the baselines match
from histosynth.generators.arrays import load_training_arrays
data, resolution, spill = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None
start = time.perf_counter()
arrays = load_training_arrays(data, resolution, ("tissue", "crops"), None, spill_dir=spill)
loaded = time.perf_counter() - start
rng = np.random.default_rng(0)
start = time.perf_counter()
for _ in range(200):
    index = np.sort(rng.choice(len(arrays), 16, replace=False))
    batch = np.ascontiguousarray(arrays.images[index]), np.ascontiguousarray(arrays.tissue[index])
per_batch = (time.perf_counter() - start) / 200
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
mb = {k: int(status[k].split()[0]) / 1024 for k in ("VmHWM", "RssAnon", "RssFile")}
print(json.dumps({"n": len(arrays), "load_s": loaded, "batch_ms": 1000 * per_batch, "peak_mb": mb["VmHWM"],
                  "anon_mb": mb["RssAnon"], "file_mb": mb["RssFile"]}))
"""


def subset(data: Path, n: int, root: Path) -> Path:
    """A dataset folder holding the first n patches of `data`."""
    from itertools import islice

    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import iter_samples, write_dataset

    out = root / f"first-{n}"
    write_dataset(islice(iter_samples(data), n), out, CardInfo(f"first {n}", "perf"))
    return out


def measure(data: Path, resolution: int, spill: str) -> dict:
    """One fresh process: load the set (in RAM when `spill` is empty), draw batches, report peak RSS."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", WORKER, str(data), str(resolution), spill],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with tissue maps")
    parser.add_argument("--n", default="250,1000", help="patch counts, comma-separated (N and 4N)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in (int(v) for v in args.n.split(",")):
            data, spill = subset(args.data, n, Path(scratch)), str(Path(scratch) / f"spill-{n}")
            rows.append(("in RAM (stacked arrays)", measure(data, args.resolution, "")))
            rows.append(("spilled, cold (written now)", measure(data, args.resolution, spill)))
            rows.append(("spilled, warm (reused)", measure(data, args.resolution, spill)))
            for name, row in rows[-3:]:
                print(f"{name:28s} n={row['n']:5d} load {row['load_s']:6.1f} s  batch {row['batch_ms']:6.2f} ms  "
                      f"anon {row['anon_mb']:6.0f} MB  file {row['file_mb']:6.0f} MB  peak {row['peak_mb']:6.0f} MB", flush=True)
    lines = [
        "", "## HTD training set: in RAM versus memory-mapped spill", "",
        f"Command: `.venv/bin/python perf/bench_training_set.py --data {args.data} --n {args.n} --resolution {args.resolution}`",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M')}; CPU: {platform.machine()}, {os.cpu_count()} cores; each row a fresh process",
        "- Spilled sets are read with numpy fancy indexing on np.memmap; a warm spill is the one a resumed run reuses. "
        "Batches: 200 draws of 16 random patches (images and maps) copied to contiguous arrays.",
        "", "| training set | patches | load s | ms per batch of 16 | RssAnon MB | RssFile MB | VmHWM MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {name} | {r['n']} | {r['load_s']:.1f} | {r['batch_ms']:.2f} | {r['anon_mb']:.0f} | {r['file_mb']:.0f} | "
              f"{r['peak_mb']:.0f} |" for name, r in rows]
    with open(args.results, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
