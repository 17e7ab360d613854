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
    assert "train: 6 samples" in printed and "tissue: not labeled" in printed
    rows = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-datasets"))
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
    first = row_to_sample(datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-datasets"))[0])
    assert sorted(first.nuclei.class_ids.tolist()) == [1, 2] and np.array_equal(first.image, images[0].astype(np.uint8))
    assert main(["data", "build", "--source", "pannuke", "--path", str(tmp_path / "fold1"), "--out", str(out), "--seed", "3"]) == 2
    assert "does not take --seed" in capsys.readouterr().err


def test_data_build_simulator_round_trips_through_load_dataset(tmp_path):
    out = tmp_path / "sim"
    assert main(["data", "build", "--source", "simulator", "--out", str(out), "--n", "5", "--size", "64", "--seed", "4"]) == 0
    rows = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-datasets"))
    expected = list(build_source("simulator", n=5, size=64, seed=4))
    assert [row_to_sample(r).equals(s) for r, s in zip(rows, expected, strict=False)] == [True] * 5
    assert expected[0].tissue is not None and len(expected[0].nuclei) > 0


def test_data_build_embedded_carries_pseudo_labels_by_default(tmp_path, capsys):
    out = tmp_path / "emb"
    assert main(["data", "build", "--source", "embedded", "--out", str(out), "--size", "128", "--n", "6"]) == 0
    printed = capsys.readouterr().out
    assert "tissue (pseudo-tissue-k" in printed and "nuclei (pseudo-nuclei-k4)" in printed and "% of patches in 20-80%" in printed
    samples = [row_to_sample(r) for r in datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-datasets"))]
    assert len(samples) == 6 and all(s.tissue is not None and s.nuclei is not None for s in samples)
    assert (out / "pseudolabels.json").is_file()
    from histosynth.hub import validate_folder

    assert validate_folder(out, progress=False)  # the sidecar is part of a publishable dataset
    assert main(["data", "build", "--source", "simulator", "--out", str(tmp_path / "s"), "--n", "2", "--pseudolabel"]) == 2
    assert "already has tissue labels" in capsys.readouterr().err


# One error policy: the UserFacingError family is one `error:` line and exit 2; anything else is a
# bug and keeps its traceback (exit 1); `--traceback` shows it for user errors too.

_BOOM_VERB = '''
from histosynth.errors import InputError


class InjectedBug(Exception):
    """Stands for a programming error: not in the user-facing family."""


def _handler(args):
    if args.kind == "user":
        raise InputError("counts.csv: line 3: 'x' is not a number")
    raise InjectedBug("an invariant broke")


def register(verbs):
    parser = verbs.add_parser("boom")
    parser.add_argument("kind", choices=("user", "bug"))
    parser.set_defaults(handler=_handler)
'''


@pytest.fixture
def boom_verb(tmp_path, monkeypatch):
    """A `boom` verb whose handler raises a user error (`boom user`) or an injected bug (`boom bug`)."""
    import histosynth.cli as cli

    (tmp_path / "boom_verb.py").write_text(_BOOM_VERB)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "boom_verb"))
    return tmp_path


def test_user_error_is_one_line_and_exit_2(boom_verb, capsys):
    assert main(["boom", "user"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: counts.csv: line 3: 'x' is not a number"]


def test_unknown_name_prints_its_message_not_a_repr(capsys):
    assert main(["ls", "gans"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot list gans;") and len(err.splitlines()) == 1 and "Traceback" not in err


def test_internal_bug_propagates_in_process(boom_verb):
    from boom_verb import InjectedBug

    with pytest.raises(InjectedBug, match="an invariant broke"):
        main(["boom", "bug"])


def test_internal_bug_shows_traceback_and_exits_1(boom_verb):
    code = ("import sys\nsys.path.insert(0, sys.argv[1])\nimport histosynth.cli as cli\n"
            "cli.COMMAND_MODULES += ('boom_verb',)\nsys.exit(cli.main(sys.argv[2:]))")  # what the console script does
    result = subprocess.run([sys.executable, "-c", code, str(boom_verb), "boom", "bug"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1] == "boom_verb.InjectedBug: an invariant broke"
    assert "error:" not in result.stderr


def test_traceback_flag_shows_user_errors_traceback(boom_verb, capsys):
    assert main(["--traceback", "boom", "user"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and 'raise InputError("counts.csv' in err
    assert err.splitlines()[-1] == "error: counts.csv: line 3: 'x' is not a number"


def test_traceback_flag_is_off_by_default():
    assert build_parser().parse_args(["ls"]).traceback is False
    assert build_parser().parse_args(["--traceback", "ls"]).traceback is True


# Exception classes of the package that are deliberately NOT user-facing (internal control flow, invariants), with
# the reason. Empty today: every exception class the package defines is one a user can fix.
NOT_USER_FACING: dict[str, str] = {}
PACKAGE_ROOTS = ("histosynth", "histosynth.generators", "histosynth.baselines", "histosynth.benchmark",
                 "histosynth.leaderboard", "histosynth.data_cards")


def _package_exception_classes() -> dict[str, type]:
    """{qualified name: class} of every exception class (warnings aside) defined in a module of the package."""
    import importlib
    import inspect
    import pkgutil

    names: set[str] = set()
    for root in PACKAGE_ROOTS:
        names.add(root)
        names.update(info.name for info in pkgutil.walk_packages(importlib.import_module(root).__path__, prefix=f"{root}."))
    found = {}
    for name in sorted(names):
        for attr, obj in vars(importlib.import_module(name)).items():
            if (inspect.isclass(obj) and issubclass(obj, Exception) and not issubclass(obj, Warning)
                    and obj.__module__ == name):
                found[f"{name}.{attr}"] = obj
    return found


def test_every_package_error_class_is_in_the_user_facing_family():
    from histosynth.errors import UserFacingError

    classes = _package_exception_classes()
    # the walk must reach every root folder, or this test would pass on nothing
    for expected in ("histosynth.schema.SampleValidationError", "histosynth.hub.PublishError",
                     "histosynth.sources.folder.FormatError", "histosynth.benchmark.errors.MetricInputError",
                     "histosynth.benchmark.results_check.ResultsFormatError", "histosynth.data_cards.sets.SpecError",
                     "histosynth.data_cards.card.CardValidationError", "histosynth.registry.RegistryError",
                     "histosynth.generators.base.CheckpointError"):
        assert expected in classes
    named_error = [name for name in classes if name.endswith("Error")]
    assert len(named_error) >= 20, named_error
    outside = sorted(name for name, cls in classes.items()
                     if not issubclass(cls, UserFacingError) and name not in NOT_USER_FACING)
    assert outside == [], f"exception classes outside the UserFacingError family (add them or list them): {outside}"
    stale = sorted(name for name in NOT_USER_FACING if name not in classes or issubclass(classes[name], UserFacingError))
    assert stale == [], stale


def test_the_family_keeps_the_builtin_bases_callers_catch():
    from histosynth.errors import InputError, MissingInputError, OutputExistsError, UnknownNameError
    from histosynth.registry import RegistryError

    assert issubclass(InputError, ValueError) and issubclass(UnknownNameError, KeyError)
    assert issubclass(MissingInputError, FileNotFoundError) and issubclass(OutputExistsError, FileExistsError)
    assert str(RegistryError("source 'x' is not registered")) == "source 'x' is not registered"  # KeyError would quote it
