"""docs/submitting.md, typed as written: its `walkthrough` code blocks (bash, and YAML written to the file named by
`walkthrough=FILE`) run in order in an empty folder and every command succeeds, both `submit --check`s included
(slow). The fast test checks that the walkthrough is there, that the example submission files name every field and
load, and that `histosynth submit --help` and the README point to the guide."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sandbox_required import sandbox  # noqa: F401 (fixture)

from histosynth.cli import build_parser
from histosynth.leaderboard.submission import FIELDS

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "submitting.md"
BLOCK = re.compile(r"^```(\w+)( walkthrough(?:=(\S+))?)?\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, bool, str | None, str]]:
    """Every fenced block of the guide: (language, part of the walkthrough, file it is written to, text)."""
    return [(lang, bool(mark), name or None, text) for lang, mark, name, text in BLOCK.findall(GUIDE.read_text())]


def test_the_guide_holds_its_walkthrough_and_complete_examples(tmp_path, capsys):
    found = blocks()
    examples = [yaml.safe_load(text) for lang, walk, _, text in found if lang == "yaml" and not walk]
    assert [set(e) for e in examples] == [FIELDS["generator"], FIELDS["dataset"]]  # every field, both kinds
    files = {name: text for lang, walk, name, text in found if walk and lang == "yaml"}
    assert sorted(files) == ["dataset.yaml", "submission.yaml"]
    assert set(yaml.safe_load(files["submission.yaml"])) == FIELDS["generator"]
    commands = "\n".join(text for lang, walk, _, text in found if walk and lang == "bash")
    for step in ("histosynth new generator tissue-painter", "pip install --no-deps --no-build-isolation --target plugin",
                 "histosynth train tissue-painter", "histosynth submit submission.yaml --check",
                 "histosynth submit dataset.yaml --check"):
        assert step in commands
    assert "[sandbox.md](sandbox.md)" in GUIDE.read_text() and "## Tracks" in GUIDE.read_text()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["submit", "--help"])
    assert "docs/submitting.md" in " ".join(capsys.readouterr().out.split())
    assert "[docs/submitting.md](docs/submitting.md)" in (ROOT / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.usefixtures("sandbox")
def test_the_walkthrough_runs_as_written(tmp_path):
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    env = {**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONPATH": ""}
    checks = []
    for lang, walk, name, text in blocks():
        if not walk:
            continue
        if lang == "yaml":
            (tmp_path / name).write_text(text)
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=1500)
        assert done.returncode == 0, f"{text}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        if " submit " in text:
            checks.append(done.stdout)
    assert len(checks) == 2 and all("check passed" in c and "nothing added" in c for c in checks), checks
    assert "PASS plugin: installed folder: tissue_painter-0.1.0.dist-info" in checks[0]
    assert "it would be tissue-painter-set-" in checks[1]
