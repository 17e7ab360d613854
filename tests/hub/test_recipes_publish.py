"""The release recipes run end to end at --scale tiny on real-format fixtures, to a publish on the local test Hub
and a pull that is identical; publish refuses a card whose measured scores this run's results do not give."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from histosynth.cli import main
from histosynth.data_cards.card import card_fingerprint
from histosynth.disk import content_fingerprint
from histosynth.hub import PublishError, file_hashes, list_versions, pull
from histosynth.recipes.release import ReleaseError, check_release_scores

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from recipe_fixtures import write_camelyon16, write_panda_folder  # noqa: E402

pytestmark = pytest.mark.hub
CARDS = Path(__file__).resolve().parents[2] / "data_cards" / "cards"


def folder_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): file_hashes(p)[0] for p in sorted(folder.rglob("*")) if p.is_file()
            and ".cache" not in p.parts}


@pytest.mark.parametrize("card, name, write", [
    ("htd-camelyon16", "camelyon16", lambda root: write_camelyon16(root / "training")),
    ("htd-panda-karolinska", "panda", lambda root: write_panda_folder(root / "panda", "karolinska")),
    ("htd-panda-radboud", "panda", lambda root: write_panda_folder(root / "panda", "radboud")),
])
def test_recipe_publishes_v1_and_the_pull_is_identical(hub_server, tmp_path, capsys, card, name, write):
    data = write(tmp_path)
    run_dir = tmp_path / "run"
    argv = ["recipe", "run", str(CARDS / f"{card}.yaml"), "--scale", "tiny", "--input", f"{name}={data}",
            "--run-dir", str(run_dir)]
    assert main(argv) == 0, capsys.readouterr().err
    repo = f"histosynth/{card}"
    assert [str(v) for v in list_versions(repo)] == ["v1.0.0"]
    release = run_dir / "release"
    text = (release / "README.md").read_text()
    assert "### Measured on this set" in text
    assert ("### Reported by the authors" in text) == (card != "htd-panda-radboud")  # the paper has no Radboud scores
    assert "sha256:" in text and "histosynth recipe run" in text
    assert card_fingerprint(text) == content_fingerprint(release)  # datasets.load_dataset caches it as itself
    pulled = pull(repo, "v1.0.0", tmp_path / "pulled")
    assert folder_hashes(pulled.path) == folder_hashes(release)
    # a rerun skips every step (publish included: the version exists and is recorded done)
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count(": cached") == 8 and "running" not in out
    # a card that states a number no results file gives is refused before anything is uploaded
    forged = tmp_path / "forged"
    shutil.copytree(release, forged)
    (forged / "README.md").write_text(text.replace("| distribution fd | effnet-lite0 | ", "| distribution fd | effnet-lite0 | 1", 1))
    with pytest.raises(ReleaseError, match="which no results file of this run"):
        check_release_scores(forged, run_dir / "results")
    with pytest.raises(PublishError, match="already"):
        from histosynth.hub import publish

        publish(release, repo, "v1.0.0", log=lambda line: None)
