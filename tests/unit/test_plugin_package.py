"""A submission's plugin may be an installed folder (package + .dist-info), a wheel or a source tree with
pyproject.toml; the scorer unpacks a wheel, and builds a source tree, in the sandbox, and the generator's entry point
loads from what it made. An egg-info folder, and wheels whose members try to leave their folder, are refused in one
line, with nothing written outside and the board unchanged. The packagings and the attacks come from
tests/plugins/wheel_attacks.py."""

import hashlib
import importlib.util
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from plugin_paths import PLUGINS, TOY_PLUGIN, load_toy_module
from sandbox_required import sandbox  # noqa: F401 (fixture)

from histosynth.benchmark.suite import VARIANTS
from histosynth.commands.submit import mock_references
from histosynth.leaderboard.identity import identify
from histosynth.leaderboard.plugin_package import (
    INSTALLED,
    SOURCE,
    WHEEL,
    PluginPackageError,
    WheelCaps,
    classify,
    prepare_plugin,
    unpack_wheel,
)
from histosynth.leaderboard.sandbox import SandboxLimits, run_sandboxed
from histosynth.leaderboard.scoring import STEP_FOLDERS, score_submission
from histosynth.leaderboard.submission import SubmissionError, load_submission

LIMITS = SandboxLimits(wall_seconds=300)
TINY = replace(VARIANTS["tiny"], n=8)


def _packaging():
    spec = importlib.util.spec_from_file_location("wheel_attacks", PLUGINS / "wheel_attacks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


packaging = _packaging()


def digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes under `folder`."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def plugin_as(kind: str, folder: Path) -> Path:
    if kind == INSTALLED:
        return TOY_PLUGIN
    if kind == WHEEL:
        return packaging.toy_wheel(folder)
    return packaging.toy_source_tree(folder / "toy-source")


def describe(folder: Path, work: Path) -> dict:
    """The toy generator's metadata as the scorer's describe step gets it, with `folder` as the plugin."""
    command = [sys.executable, "-I", "-B", "-m", "histosynth.leaderboard.plugin_step", "/sandbox/in/plugin",
               "histosynth.generators.plugins", "toy"]
    result = run_sandboxed(command, work, LIMITS, inputs={"plugin": folder})
    assert result.ok, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.usefixtures("sandbox")
@pytest.mark.parametrize("kind", [INSTALLED, WHEEL, SOURCE])
def test_each_packaging_is_prepared_and_its_entry_point_loads(tmp_path, kind):
    plugin = plugin_as(kind, tmp_path / "in")
    before = digest(plugin) if plugin.is_dir() else plugin.read_bytes()
    assert classify(plugin) == kind
    prepared = prepare_plugin(plugin, tmp_path / "work", LIMITS)
    assert prepared.kind == kind and "histosynth_toy_plugin-0.1.0.dist-info" in prepared.detail, prepared.detail
    assert (prepared.folder / "toy_generator.py").is_file()
    assert describe(prepared.folder, tmp_path / "describe")["target"] == "toy_generator:ToyPainter"
    assert (digest(plugin) if plugin.is_dir() else plugin.read_bytes()) == before  # built from a copy
    if kind == SOURCE:
        assert "built in the sandbox" in prepared.detail
        assert sorted(p.name for p in plugin.iterdir()) == ["pyproject.toml", "toy_generator.py"]


def test_an_egg_info_folder_is_refused_in_one_line(tmp_path):
    folder = packaging.toy_egg_info_folder(tmp_path / "egg")
    with pytest.raises(PluginPackageError, match=r"histosynth_toy_plugin.egg-info but no .dist-info: an egg-info .* "
                                                 r"not a plugin; submit .* pyproject.toml, a wheel") as caught:
        classify(folder)
    assert "\n" not in str(caught.value)


def test_a_folder_that_is_no_package_says_what_a_plugin_is(tmp_path):
    (tmp_path / "code.py").write_text("x = 1\n")
    with pytest.raises(PluginPackageError, match="no .dist-info folder and no pyproject.toml; a plugin is a folder"):
        classify(tmp_path)


@pytest.mark.parametrize("attack, message", [
    ("dotdot", r"member '../escaped.py' leaves the folder"),
    ("absolute", r"member '/tmp/histosynth-absolute-member.py' is an absolute or malformed path"),
    ("symlink", r"member 'toy_link.py' is a link or special file"),
    ("data-dotdot", r"leaves the folder"),
])
def test_a_hostile_wheel_is_refused_before_anything_is_written(tmp_path, attack, message):
    wheel = packaging.attack_wheel(tmp_path / "in", attack)
    with pytest.raises(PluginPackageError, match=message) as caught:
        unpack_wheel(wheel, tmp_path / "out" / "plugin")
    assert "\n" not in str(caught.value) and str(caught.value).startswith(wheel.name)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped.py").exists()
    assert not Path("/tmp/histosynth-absolute-member.py").exists()


def test_wheel_caps_and_non_wheels_are_refused(tmp_path):
    wheel = packaging.toy_wheel(tmp_path)
    with pytest.raises(PluginPackageError, match="5 members, over the cap of 3"):
        unpack_wheel(wheel, tmp_path / "a", WheelCaps(members=3))
    with pytest.raises(PluginPackageError, match="over the cap of 100"):
        unpack_wheel(wheel, tmp_path / "b", WheelCaps(member_bytes=100))
    (tmp_path / "fake.whl").write_text("not a zip")
    with pytest.raises(PluginPackageError, match="fake.whl: not a wheel"):
        unpack_wheel(tmp_path / "fake.whl", tmp_path / "c")
    bare = packaging.write_wheel(tmp_path / "bare.whl", {"toy_generator.py": "x = 1\n"})
    with pytest.raises(PluginPackageError, match="no \\*.dist-info/METADATA; not a wheel"):
        unpack_wheel(bare, tmp_path / "d")


@pytest.mark.usefixtures("sandbox")
def test_a_source_tree_that_fails_to_build_says_why_in_one_line(tmp_path):
    source = packaging.toy_source_tree(tmp_path / "src")
    text = (source / "pyproject.toml").read_text().replace("setuptools.build_meta", "hatchling.build")
    (source / "pyproject.toml").write_text(text)
    with pytest.raises(PluginPackageError, match=r"src: building the source tree failed: .*only setuptools is "
                                                 r"installed for builds") as caught:
        prepare_plugin(source, tmp_path / "work", LIMITS)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(source))


def test_a_submission_names_a_wheel_or_a_folder_as_its_plugin(tmp_path):
    (tmp_path / "model").mkdir()
    wheel = packaging.toy_wheel(tmp_path)
    (tmp_path / "s.yaml").write_text(f"kind: generator\ngenerator: toy\ncheckpoint: model\nplugin: {wheel.name}\n")
    assert load_submission(tmp_path / "s.yaml").plugin == wheel
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "s.yaml").write_text("kind: generator\ngenerator: toy\ncheckpoint: model\nplugin: notes.txt\n")
    with pytest.raises(SubmissionError, match="plugin: .*notes.txt is not a folder or a .whl file"):
        load_submission(tmp_path / "s.yaml")


def test_the_identity_of_a_wheel_submission_is_its_files_hash(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.safetensors").write_bytes(b"weights")
    wheel = packaging.toy_wheel(tmp_path)
    first = identify("generator", "toy", [tmp_path / "model", wheel])
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    assert identify("generator", "toy", [tmp_path / "model", wheel]).sha256 != first.sha256


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    return mock_references(tmp_path_factory.mktemp("refs"))


def submission_with(tmp_path: Path, plugin: Path):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"generator": "toy"}))
    (tmp_path / "submission.yaml").write_text(f"kind: generator\ngenerator: toy\ncheckpoint: model\nplugin: {plugin}\n")
    return load_submission(tmp_path / "submission.yaml")


@pytest.mark.usefixtures("sandbox")
@pytest.mark.parametrize("attack", ["dotdot", "absolute", "egg-info"])
def test_the_scorer_refuses_a_hostile_or_wrong_plugin_in_its_plugin_step(tmp_path, refs, attack):
    plugin = (packaging.toy_egg_info_folder(tmp_path / "egg") if attack == "egg-info"
              else packaging.attack_wheel(tmp_path / "in", attack))
    results = tmp_path / "results"
    shutil.copytree(TOY_PLUGIN, results / "someone-else")  # any content: it must stay as it was
    before = digest(results)
    report = score_submission(submission_with(tmp_path, plugin), refs, TINY, results, tmp_path / "work", LIMITS,
                              log=lambda _: None, tasks=("distribution",))
    failed = report.failed()
    assert [s.name for s in report.steps] == ["identify", "new subject", "plugin"], report.summary()
    assert failed.name == "plugin" and "\n" not in failed.detail and str(plugin) in failed.detail
    assert ("egg-info" if attack == "egg-info" else "refused") in failed.detail
    assert digest(results) == before and not report.results
    assert not any((tmp_path / "work" / name).exists() for name in STEP_FOLDERS)
    assert not (tmp_path / "work" / "escaped.py").exists() and not (tmp_path / "escaped.py").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("sandbox")
def test_a_wheel_submission_is_scored_under_the_hash_of_the_wheel(tmp_path, refs):
    """Through the whole scorer (check mode, the distribution task): the plugin step unpacks the wheel, the toy
    generator loads from it and is scored; the subject's hash covers the wheel file as submitted."""
    from histosynth.generators.registry import GENERATORS

    assert "toy" not in GENERATORS  # trained through the class; the registry stays the built-in one
    load_toy_module().ToyPainter.build("tiny").train(refs.train, out=tmp_path / "model")
    wheel = packaging.toy_wheel(tmp_path / "dist")
    (tmp_path / "submission.yaml").write_text(f"kind: generator\ngenerator: toy\ncheckpoint: model\n"
                                              f"plugin: dist/{wheel.name}\n")
    submission = load_submission(tmp_path / "submission.yaml")
    report = score_submission(submission, refs, TINY, tmp_path / "results", tmp_path / "work", LIMITS,
                              log=lambda _: None, tasks=("distribution",), check=True)
    assert report.ok, report.summary()
    steps = {s.name: s.detail for s in report.steps}
    assert steps["plugin"].startswith("wheel unpacked: histosynth_toy_plugin-0.1.0.dist-info")
    expected = identify("generator", "toy", [tmp_path / "model", wheel])
    assert report.subject == expected.folder
