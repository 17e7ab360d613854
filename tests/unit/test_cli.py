import json
import subprocess
import sys

import datasets
import numpy as np
import pytest
from PIL import Image

from histosynth.cli import build_parser, main
from histosynth.rows import row_to_sample
from histosynth.sources import build_source


def test_ls_lists_registries_without_importing_torch():
    code = "import sys, io, contextlib, json\nfrom histosynth.cli import main\nbuf = io.StringIO()\nwith contextlib.redirect_stdout(buf):\n    main(['ls'])\nprint(json.dumps({'out': buf.getvalue(), 'heavy': [m for m in ('torch', 'datasets', 'diffusers', 'timm') if m in sys.modules]}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["heavy"] == []
    for expected in ("sources:", "embedded", "simulator", "schemas:", "camelyon16", "pseudo-tissue-kN", "encoders"):
        assert expected in data["out"]


def test_ls_rejects_unknown_kind(capsys):
    assert main(["ls", "gans"]) == 2
    assert "cannot list gans" in capsys.readouterr().err


@pytest.mark.parametrize("verb", [[], ["ls"], ["data"], ["data", "build"], ["data", "show"], ["demo"]])
def test_help_everywhere(verb, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*verb, "--help"])
    assert info.value.code == 0
    assert "usage: histosynth" in capsys.readouterr().out


def test_data_build_embedded_round_trips_through_load_dataset(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["data", "build", "--source", "embedded", "--out", str(out), "--size", "128", "--n", "6", "--no-pseudolabel"]) == 0
    printed = capsys.readouterr().out
    assert "train: 6 samples" in printed and "tissue: not labelled" in printed
    rows = datasets.load_dataset(str(out), split="train")
    expected = list(build_source("embedded", size=128, n=6))
    assert len(rows) == 6
    assert all(row_to_sample(r).equals(s) for r, s in zip(rows, expected, strict=False))
    assert expected[0].provenance.slide_id == "CMU-1-Small-Region" and expected[0].image.shape == (128, 128, 3)


def test_data_show_draws_a_png(tmp_path):
    out = tmp_path / "d"
    main(["data", "build", "--source", "embedded", "--out", str(out), "--size", "128", "--n", "4", "--no-pseudolabel"])
    assert main(["data", "show", str(out), "--out", str(tmp_path / "grid.png"), "--n", "4"]) == 0
    picture = np.asarray(Image.open(tmp_path / "grid.png"))
    assert picture.shape[0] > 100 and picture.shape[1] > 100 and picture.std() > 10


def test_data_show_on_a_non_dataset_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["data", "show", str(tmp_path / "empty"), "--out", str(tmp_path / "g.png")]) == 2
    assert "README.md: missing" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_data_build_no_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    main(["data", "build", "--source", "embedded", "--out", str(out), "--size", "128", "--n", "2", "--no-pseudolabel"])
    assert main(["data", "build", "--source", "embedded", "--out", str(out), "--size", "128", "--n", "3", "--no-overwrite", "--no-pseudolabel"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_bad_option_values_are_clear_errors(tmp_path, capsys):
    assert main(["data", "build", "--source", "embedded", "--out", str(tmp_path / "d"), "--size", "8"]) == 2
    assert "size must be at least 16" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_data_build_passes_reader_options(tmp_path, capsys):
    from format_writers import write_pannuke_fold

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.float64)
    masks = np.zeros((3, 32, 32, 6), np.float64)
    masks[:, 4:9, 4:9, 1] = 7  # one inflammatory instance per patch
    masks[:, 20:25, 10:14, 0] = 3  # one neoplastic
    write_pannuke_fold(tmp_path / "fold1", images, masks, ["Breast", "Colon", "Lung"])
    out = tmp_path / "d"
    assert main(["data", "build", "--source", "pannuke", "--path", str(tmp_path / "fold1"), "--out", str(out)]) == 0
    assert "nuclei (pannuke): 6" in capsys.readouterr().out
    first = row_to_sample(datasets.load_dataset(str(out), split="train")[0])
    assert sorted(first.nuclei.class_ids.tolist()) == [1, 2] and np.array_equal(first.image, images[0].astype(np.uint8))
    assert main(["data", "build", "--source", "pannuke", "--path", str(tmp_path / "fold1"), "--out", str(out), "--seed", "3"]) == 2
    assert "does not take --seed" in capsys.readouterr().err


def test_data_build_simulator_round_trips_through_load_dataset(tmp_path):
    out = tmp_path / "sim"
    assert main(["data", "build", "--source", "simulator", "--out", str(out), "--n", "5", "--size", "64", "--seed", "4"]) == 0
    rows = datasets.load_dataset(str(out), split="train")
    expected = list(build_source("simulator", n=5, size=64, seed=4))
    assert [row_to_sample(r).equals(s) for r, s in zip(rows, expected, strict=False)] == [True] * 5
    assert expected[0].tissue is not None and len(expected[0].nuclei) > 0


def test_data_build_embedded_carries_pseudo_labels_by_default(tmp_path, capsys):
    out = tmp_path / "emb"
    assert main(["data", "build", "--source", "embedded", "--out", str(out), "--size", "128", "--n", "6"]) == 0
    printed = capsys.readouterr().out
    assert "tissue (pseudo-tissue-k" in printed and "nuclei (pseudo-nuclei-k4)" in printed and "% of patches in 20-80%" in printed
    samples = [row_to_sample(r) for r in datasets.load_dataset(str(out), split="train")]
    assert len(samples) == 6 and all(s.tissue is not None and s.nuclei is not None for s in samples)
    assert (out / "pseudolabels.json").is_file()
    from histosynth.hub import validate_folder

    assert validate_folder(out, progress=False)  # the sidecar is part of a publishable dataset
    assert main(["data", "build", "--source", "simulator", "--out", str(tmp_path / "s"), "--n", "2", "--pseudolabel"]) == 2
    assert "already has tissue labels" in capsys.readouterr().err
