"""The toy plugin packaged every way a submitter may package it, and hostile wheels, written at test time.

Standard library only. `toy_wheel` zips tests/plugins/toy_dist as a wheel; `toy_source_tree` lays it out as a source
folder with pyproject.toml (setuptools, one module); `toy_egg_info_folder` is the module with an egg-info and no
.dist-info (what a development install leaves). The attacks are wheels whose members try to leave the folder they
are unpacked into: a `../` member, an absolute member, a symbolic link, and a `.data/purelib` member with `..`.

    python wheel_attacks.py OUT_DIR      # writes every wheel and folder under OUT_DIR (for a look by hand)
"""

from __future__ import annotations

import shutil
import stat
import sys
import zipfile
from pathlib import Path

TOY = Path(__file__).resolve().parent / "toy_dist"
DIST_INFO = "histosynth_toy_plugin-0.1.0.dist-info"
WHEEL_NAME = "histosynth_toy_plugin-0.1.0-py3-none-any.whl"
ENTRY_POINTS = "[histosynth.generators]\ntoy = toy_generator:META\n"
WHEEL_FILE = "Wheel-Version: 1.0\nGenerator: wheel_attacks\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _regular(name: str, mode: int = 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = (stat.S_IFREG | mode) << 16
    return info


def write_wheel(path: Path, members: dict[str, str], links: dict[str, str] | None = None) -> Path:
    """A zip at `path` with regular-file `members` (name -> text) and symbolic-link members (name -> target)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(_regular(name), text)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def toy_members() -> dict[str, str]:
    """The toy plugin's wheel members: the module and a complete .dist-info."""
    members = {"toy_generator.py": (TOY / "toy_generator.py").read_text(encoding="utf-8"),
               f"{DIST_INFO}/METADATA": (TOY / DIST_INFO / "METADATA").read_text(encoding="utf-8"),
               f"{DIST_INFO}/entry_points.txt": ENTRY_POINTS, f"{DIST_INFO}/WHEEL": WHEEL_FILE}
    members[f"{DIST_INFO}/RECORD"] = "".join(f"{name},,\n" for name in members) + f"{DIST_INFO}/RECORD,,\n"
    return members


def toy_wheel(folder: Path) -> Path:
    """The toy plugin as a wheel in `folder`."""
    return write_wheel(folder / WHEEL_NAME, toy_members())


def toy_source_tree(folder: Path) -> Path:
    """The toy plugin as a source folder: pyproject.toml (setuptools, one module) and toy_generator.py."""
    folder.mkdir(parents=True)
    shutil.copyfile(TOY / "toy_generator.py", folder / "toy_generator.py")
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=70.1"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "histosynth-toy-plugin"\nversion = "0.1.0"\n\n'
        '[project.entry-points."histosynth.generators"]\ntoy = "toy_generator:META"\n\n'
        '[tool.setuptools]\npy-modules = ["toy_generator"]\n', encoding="utf-8")
    return folder


def toy_egg_info_folder(folder: Path) -> Path:
    """The toy module beside an egg-info and no .dist-info: not a plugin."""
    egg = folder / "histosynth_toy_plugin.egg-info"
    egg.mkdir(parents=True)
    shutil.copyfile(TOY / "toy_generator.py", folder / "toy_generator.py")
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: histosynth-toy-plugin\nVersion: 0.1.0\n")
    (egg / "entry_points.txt").write_text(ENTRY_POINTS)
    return folder


ATTACKS = {
    "dotdot": ({"../escaped.py": "print('outside')\n"}, None),
    "absolute": ({"/tmp/histosynth-absolute-member.py": "print('outside')\n"}, None),
    "symlink": ({}, {"toy_link.py": "/etc/passwd"}),
    "data-dotdot": ({"histosynth_toy_plugin-0.1.0.data/purelib/../../escaped.py": "print('outside')\n"}, None),
}


def attack_wheel(folder: Path, attack: str) -> Path:
    """The toy wheel plus one hostile member (ATTACKS[attack]), named like a real wheel."""
    members, links = ATTACKS[attack]
    return write_wheel(folder / attack / WHEEL_NAME, {**toy_members(), **members}, links)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    toy_wheel(out / "wheel")
    toy_source_tree(out / "source")
    toy_egg_info_folder(out / "egg-info")
    for name in ATTACKS:
        attack_wheel(out / "attacks", name)
    print(f"wrote {out}")
