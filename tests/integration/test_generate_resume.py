"""`histosynth train` / `histosynth generate` end to end on the tiny preset: the dataset written, a killed run
finished by rerunning it (byte-identical to an uninterrupted run), and 2 processes under torchrun writing exactly
the 1-process dataset.

Bytes depend on the CPU thread count (reduction order), so every run here uses one thread: OMP_NUM_THREADS=1 in
subprocesses and torch.set_num_threads(1) in this process.
"""

import hashlib
import os
import signal
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest

import histosynth.cli as cli
from histosynth.data_cards.card import CardInfo
from histosynth.dataset import build_dataset
from histosynth.disk import iter_samples, read_metadata, write_dataset, write_shard
from histosynth.generators.jobs import CHUNKS_DIR, JOB_FILE, generate_dataset
from histosynth.resize import resize_map
from histosynth.sources import build_source

KILLED = textwrap.dedent("""
    import os, signal, sys
    from histosynth.generators.jobs import generate_dataset

    def die(chunk):
        if chunk == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-job: chunks 0 and 1 written, 2 and 3 not

    generate_dataset(sys.argv[1], sys.argv[2], n=7, out=sys.argv[3], seed=5, chunk_size=2, on_chunk=die, progress=False)
""")


def run_cli(argv):
    """histosynth.cli.main on stringified arguments."""
    return cli.main([str(a) for a in argv])


def run_group(run_in_group, command):
    """A subprocess in its own process group with one thread and the Hub offline; returns (code, output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    code, out, err = run_in_group(command, env)
    return code, out + err


def folder_bytes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Conditions (5 simulator patches) and a tiny HTD model trained 2 steps through the CLI."""
    root = tmp_path_factory.mktemp("gen")
    build_dataset("simulator", root / "conditions", {"n": 5, "size": 32, "seed": 0, "mpp": 4.0})
    assert run_cli(["train", "htd", "--data", root / "conditions", "--preset", "tiny", "--steps", "2",
                    "--out", root / "ckpt"]) == 0
    return root


def test_a_chunk_shard_is_what_write_dataset_writes(tmp_path):
    samples = list(build_source("simulator", n=3, size=32, seed=2, mpp=4.0))
    write_dataset(samples, tmp_path / "dataset", CardInfo("x", "x"))
    summary = write_shard(samples, tmp_path / "chunk.parquet")
    assert summary.split_sizes == {"train": 3} and summary.tissue_schema == "simulator-tissue"
    assert (tmp_path / "chunk.parquet").read_bytes() == (tmp_path / "dataset/data/train-00000-of-00001.parquet").read_bytes()


@pytest.mark.parametrize("verb", ["train", "generate"])
def test_help(verb, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli([verb, "--help"])
    assert info.value.code == 0 and "usage: histosynth" in capsys.readouterr().out


def test_generate_writes_a_labeled_dataset(setup, tmp_path, capsys, one_thread):
    out = tmp_path / "synthetic"
    assert run_cli(["generate", "htd", "--checkpoint", setup / "ckpt", "--conditions", setup / "conditions",
                    "--n", 7, "--chunk-size", 3, "--seed", 1, "--out", out]) == 0
    assert "7 samples by htd" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    meta = read_metadata(out)
    assert meta["histosynth"]["generator"]["name"] == "htd" and meta["license"] == "cc0-1.0"
    conditions = list(iter_samples(setup / "conditions"))
    samples = list(iter_samples(out))
    assert len(samples) == 7
    for i, sample in enumerate(samples):
        assert np.array_equal(sample.tissue, resize_map(conditions[i % 5].tissue, 32))
        assert sample.provenance.generator == "htd" and sample.provenance.checkpoint_hash.startswith("sha256:")
    assert len({s.provenance.seed for s in samples}) == 7
    rows = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-datasets"))
    assert rows.num_rows == 7 and rows.features["tissue"].mode == "L"
    assert not list(tmp_path.glob(".synthetic.work-*"))  # the work folder is gone once published


def test_generate_refuses_another_generators_checkpoint(setup, tmp_path, capsys):
    code = run_cli(["generate", "htd-embedding", "--checkpoint", setup / "ckpt", "--conditions", setup / "conditions",
                    "--n", 1, "--out", tmp_path / "x"])
    assert code == 2 and "holds a 'htd' generator, not 'htd-embedding'" in capsys.readouterr().err


def test_killed_generation_resumes_to_the_same_bytes(setup, tmp_path, one_thread, run_in_group):
    args = (setup / "ckpt", setup / "conditions")
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    code, log = run_group(run_in_group, [sys.executable, script, *args, tmp_path / "resumed"])
    assert code == -signal.SIGKILL, log[-2000:]
    assert not (tmp_path / "resumed").exists()  # nothing is published before the end
    (work,) = tmp_path.glob(".resumed.work-*")
    assert sorted(p.name for p in (work / CHUNKS_DIR).glob("*.parquet")) == ["train-00000-of-00004.parquet",
                                                                            "train-00001-of-00004.parquet"]
    assert (work / JOB_FILE).is_file()
    with pytest.raises(datasets.data_files.EmptyDatasetError):
        datasets.load_dataset(str(work), cache_dir=str(tmp_path / "hf-datasets"))  # finished chunks are not taken for a (partial) dataset
    (work / CHUNKS_DIR / ".train-00002-of-00004.parquet.staged").write_bytes(b"torn write")  # a half-written shard is ignored

    generate_dataset(*args, n=7, out=tmp_path / "resumed", seed=5, chunk_size=2, progress=False)
    generate_dataset(*args, n=7, out=tmp_path / "straight", seed=5, chunk_size=2, progress=False)
    resumed, straight = folder_bytes(tmp_path / "resumed"), folder_bytes(tmp_path / "straight")
    assert len(resumed) == 5 and resumed == straight
    assert len(list(iter_samples(tmp_path / "resumed"))) == 7
    assert not work.exists()


def test_two_processes_write_the_one_process_dataset(setup, tmp_path, one_thread, run_in_group):
    args = ["--checkpoint", setup / "ckpt", "--conditions", setup / "conditions", "--n", 7, "--chunk-size", 2,
            "--seed", 3]
    # "--" keeps torchrun's parser off our options (it would read --n as an ambiguous abbreviation of its own)
    code, log = run_group(run_in_group, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2,
                                         "-m", "--", "histosynth.cli", "generate", "htd", *args, "--out", tmp_path / "two"])
    assert code == 0, log[-3000:]
    assert run_cli(["generate", "htd", *args, "--out", tmp_path / "one"]) == 0
    assert folder_bytes(tmp_path / "two") == folder_bytes(tmp_path / "one")


def corrupt_row(dataset: Path, index: int) -> Path:
    """Copy of row `index` of the one shard with its image PNG cut short; returns the shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (shard,) = (dataset / "data").glob("*.parquet")
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[index]["image"] = {"bytes": rows[index]["image"]["bytes"][:40], "path": None}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    return shard


@pytest.fixture
def bad_conditions(setup, tmp_path):
    """The 5 conditions with row 3's image damaged."""
    import shutil

    shutil.copytree(setup / "conditions", tmp_path / "conditions")
    return tmp_path / "conditions", corrupt_row(tmp_path / "conditions", 3)


def generate_args(setup, conditions, n, chunk_size, out):
    return ["generate", "htd", "--checkpoint", setup / "ckpt", "--conditions", conditions, "--n", n,
            "--chunk-size", chunk_size, "--out", out]


def test_a_corrupt_condition_row_names_the_shard_and_reports_the_kept_work(setup, bad_conditions, tmp_path, capsys):
    conditions, shard = bad_conditions
    assert run_cli(generate_args(setup, conditions, 6, 2, tmp_path / "out")) == 2  # chunk 0 (rows 0, 1) finishes
    error = capsys.readouterr().err.strip().splitlines()[-1]
    (work,) = tmp_path.glob(".out.work-*")
    assert error.startswith(f"error: {shard}: row 3: ") and "image: cannot decode image" in error, error
    assert error.endswith(f"partial work kept in {work} (1 finished chunk(s)): resume with the same command, or delete {work}")
    assert sorted(p.name for p in (work / CHUNKS_DIR).glob("*.parquet")) == ["train-00000-of-00003.parquet"]
    assert not (tmp_path / "out").exists()


def test_an_error_before_any_chunk_leaves_nothing(setup, bad_conditions, tmp_path, capsys):
    conditions, shard = bad_conditions
    assert run_cli(generate_args(setup, conditions, 6, 5, tmp_path / "out")) == 2  # row 3 is in chunk 0
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: {shard}: row 3: ") and "partial work" not in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conditions"]


def test_a_truncated_conditions_shard_names_the_file(setup, tmp_path, capsys):
    import shutil

    shutil.copytree(setup / "conditions", tmp_path / "conditions")
    (shard,) = (tmp_path / "conditions/data").glob("*.parquet")
    shard.write_bytes(shard.read_bytes()[:5000])
    assert run_cli(generate_args(setup, tmp_path / "conditions", 2, 2, tmp_path / "out")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: {shard}: unreadable parquet shard (") and "magic bytes" in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conditions"]


@pytest.mark.parametrize("out_exists", [False, True])
def test_train_on_a_corrupt_dataset_names_the_row_and_leaves_nothing(setup, bad_conditions, tmp_path, capsys, out_exists):
    conditions, shard = bad_conditions
    out = tmp_path / "model"
    if out_exists:
        out.mkdir()
    assert run_cli(["train", "htd", "--data", conditions, "--preset", "tiny", "--steps", 1, "--out", out]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: {shard}: row 3: "), error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conditions"] + (["model"] if out_exists else [])
    assert not out_exists or list(out.iterdir()) == []
