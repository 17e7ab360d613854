"""`histosynth new generator NAME` writes a plugin that works as written: its files, lint-clean, and its own contract
test passing with PYTHONPATH set to its folder; a bad name or an existing folder is one `error:` line with nothing
written; left as a source tree, the scorer builds it in the sandbox and its entry point loads; and (slow) packaged
as a wheel and trained, it passes `histosynth submit --check` unchanged."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox_required import sandbox  # noqa: F401 (fixture)

import histosynth.cli as cli
from histosynth.commands.new import class_name, package_name
from histosynth.leaderboard.submission import load_submission

NAME = "tissue-painter"
FILES = [".gitignore", "README.md", "pyproject.toml", "tests/test_contract.py", "tissue_painter/__init__.py",
         "tissue_painter/meta.py", "tissue_painter/model.py", "tissue_painter/presets.py"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # this tiny net is fastest on one thread


def env(**extra: str) -> dict[str, str]:
    """This process's environment, offline and on one thread, with the venv's scripts first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": path, **ONE_THREAD,
            "PYTHONPATH": "", **extra}


def new_generator(folder: Path, name: str = NAME) -> Path:
    assert cli.main(["new", "generator", name, "--out", str(folder)]) == 0
    return folder


def test_the_skeleton_is_complete_and_passes_its_own_contract_test(tmp_path, capsys):
    out = new_generator(tmp_path / NAME)
    printed = capsys.readouterr().out
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == FILES
    assert "README.md" in printed and "docs/submitting.md" in printed
    pyproject = (out / "pyproject.toml").read_text()
    assert '[project.entry-points."histosynth.generators"]\ntissue-painter = "tissue_painter.meta:META"' in pyproject
    meta = (out / "tissue_painter" / "meta.py").read_text()
    assert "@misc{tissue_painter2026," in meta and "author = {" in meta and "year = {2026}" in meta
    assert 'target="tissue_painter.model:TissuePainterGenerator"' in meta
    readme = (out / "README.md").read_text()
    for step in ("pytest", "pip install --no-deps --no-build-isolation --target plugin ./tissue-painter",
                 "histosynth train tissue-painter", "histosynth submit submission.yaml --check"):
        assert step in readme
    (tmp_path / "model").mkdir()
    (tmp_path / "plugin").mkdir()
    (tmp_path / "submission.yaml").write_text(readme.split("<<'EOF'\n")[1].split("EOF\n")[0])
    submission = load_submission(tmp_path / "submission.yaml")  # the README's YAML is a valid submission
    assert submission.generator == NAME and submission.citation.startswith("@misc{tissue_painter2026,")
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F,I,B", "--line-length",
                           "120", "."], cwd=out, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=out,
                         capture_output=True, text=True, env=env(PYTHONPATH=str(out)), timeout=600)
    assert run.returncode == 0 and "3 passed" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]


@pytest.mark.parametrize("name, message", [
    ("Tissue", "must be 1-64 of a-z, 0-9 and '-', starting with a letter"),
    ("9lives", "starting with a letter"),
    ("under_score", "must be 1-64 of a-z, 0-9 and '-'"),
    ("a" * 65, "must be 1-64"),
    ("htd", "'htd' is a built-in generator"),
    ("json", "package 'json': a Python keyword or standard-library module"),
    ("numpy", "package 'numpy': a module of that name is already importable here"),
])
def test_a_bad_name_is_one_error_line_and_writes_nothing(tmp_path, capsys, name, message):
    assert cli.main(["new", "generator", name, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_refused_and_left_as_it_was(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert cli.main(["new", "generator", NAME, "--out", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'mine'}: already exists; `histosynth new` writes a new folder, choose another " \
                  "--out\n"
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_names_map_to_a_package_and_a_class():
    assert (package_name("tissue-painter"), class_name("tissue-painter")) == ("tissue_painter", "TissuePainterGenerator")
    assert (package_name("gan2d"), class_name("gan2d")) == ("gan2d", "Gan2dGenerator")


@pytest.mark.usefixtures("sandbox")
def test_the_skeleton_as_a_source_tree_is_built_in_the_sandbox_and_loads(tmp_path):
    from histosynth.leaderboard.plugin_package import SOURCE, prepare_plugin
    from histosynth.leaderboard.sandbox import SandboxLimits, run_sandboxed

    out = new_generator(tmp_path / NAME)
    limits = SandboxLimits(wall_seconds=300)
    prepared = prepare_plugin(out, tmp_path / "work", limits)
    assert prepared.kind == SOURCE and "tissue_painter-0.1.0.dist-info" in prepared.detail, prepared.detail
    command = [sys.executable, "-I", "-B", "-m", "histosynth.leaderboard.plugin_step", "/sandbox/in/plugin",
               "histosynth.generators.plugins", NAME]
    result = run_sandboxed(command, tmp_path / "describe", limits, inputs={"plugin": prepared.folder})
    assert result.ok, result.stderr[-2000:]
    meta = json.loads(result.stdout.strip().splitlines()[-1])
    assert meta["target"] == "tissue_painter.model:TissuePainterGenerator" and meta["conditioning"] == ["tissue"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == FILES  # built from a copy


@pytest.mark.slow
@pytest.mark.usefixtures("sandbox")
def test_the_skeleton_packaged_as_a_wheel_and_trained_passes_submit_check_unchanged(tmp_path):
    """The steps of its README with a wheel: build it, train with the package importable, write the YAML, check."""
    new_generator(tmp_path / NAME)

    def sh(*command: str, **extra: str) -> str:
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env(**extra), timeout=900)
        assert done.returncode == 0, f"{command}: {done.stdout[-3000:]} {done.stderr[-3000:]}"
        return done.stdout

    python = sys.executable
    sh(python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", "dist", f"./{NAME}")
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    sh(python, "-m", "pip", "install", "--no-deps", "--no-index", "--target", "installed", str(wheel))
    sh("histosynth", "data", "build", "--source", "simulator", "--n", "64", "--size", "32", "--mpp", "4", "--seed",
       "1", "--out", "train")
    sh("histosynth", "train", NAME, "--data", "train", "--preset", "tiny", "--out", "model",
       PYTHONPATH=str(tmp_path / "installed"))
    (tmp_path / "submission.yaml").write_text(f"kind: generator\ngenerator: {NAME}\ncheckpoint: model\n"
                                              f"plugin: dist/{wheel.name}\ntitle: Tissue painter\n")
    report = sh("histosynth", "submit", "submission.yaml", "--check")
    assert "PASS plugin: wheel unpacked: tissue_painter-0.1.0.dist-info" in report, report
    assert "check passed" in report and "nothing added" in report, report
