"""How a submission's generator plugin is packaged, and how the scorer turns it into the folder the sandbox imports.

`plugin:` in submission.yaml may be
- a folder holding the package and its `.dist-info` (what `pip install --no-deps --target DIR ...` writes): used as
  it is;
- a wheel (`*.whl`): unpacked into a folder;
- a source tree (a folder with pyproject.toml): built into a wheel, then unpacked as a wheel is.
A folder with an `*.egg-info` but no `.dist-info` is refused: an egg-info is the trace a development install leaves
in a source tree, not a package the scorer can import.

The host only looks at names (lstat, nothing opened). The wheel's zip is parsed, and the build runs, in the sandbox
(`python -I -B -m histosynth.leaderboard.plugin_package unpack|build IN OUT`): a build runs the submitter's code
(setup.py, the build backend), so it is never run on the host. It is offline: `pip wheel --no-deps
--no-build-isolation --no-index` with the setuptools of histosynth's own environment, on a copy of the tree (the
tree itself is bound read-only). Unpacking refuses absolute member paths, `..`, links and anything else that is not
a regular file or folder, encrypted members, and more members or bytes than `WheelCaps` allow, each in one line.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from histosynth.errors import InputError

if TYPE_CHECKING:
    from histosynth.leaderboard.sandbox import SandboxLimits

INSTALLED, WHEEL, SOURCE = "installed folder", "wheel", "source tree"
PACKAGING_HELP = ("a plugin is a folder holding the package and its .dist-info (`pip install --no-deps --target DIR "
                  ".`), a wheel (`pip wheel --no-deps -w dist .`) or a source folder with pyproject.toml; see "
                  "docs/submitting.md")
TOP_IGNORED = ("build", "dist", ".git")  # never copied into a build: stale outputs a build would pick up
IGNORED = ("*.egg-info", "__pycache__")
PIP_GENERIC = re.compile(r"(Failed to build|Failed building wheel|subprocess-exited-with-error|See above for output|"
                         r"^note:|^hint:|exit code:|╰─>|^\s*$)")
EXIT_REFUSED = 2


class PluginPackageError(InputError):
    """A plugin is not packaged as the scorer accepts, or it could not be built or unpacked; one line."""


@dataclass(frozen=True)
class WheelCaps:
    """How much a wheel may hold, checked on its directory before anything is written."""

    members: int = 20_000
    bytes: int = 1 << 30
    member_bytes: int = 512 << 20


@dataclass(frozen=True)
class PreparedPlugin:
    """The folder the sandbox imports the plugin from, and one line on what was found or built."""

    folder: Path
    kind: str
    detail: str


def classify(plugin: Path) -> str:
    """INSTALLED, WHEEL or SOURCE for a submitted plugin path, from names alone (lstat); anything else, an egg-info
    without a .dist-info included, raises PluginPackageError naming the path."""
    mode = os.lstat(plugin).st_mode if os.path.lexists(plugin) else None
    if mode is not None and stat.S_ISREG(mode) and plugin.name.endswith(".whl"):
        return WHEEL
    if mode is None or not stat.S_ISDIR(mode):
        raise PluginPackageError(f"{plugin}: not a folder or a .whl file; {PACKAGING_HELP}")
    with os.scandir(plugin) as listing:
        entries = {entry.name: entry.is_dir(follow_symlinks=False) for entry in listing}
    if entries.get("pyproject.toml") is False:
        return SOURCE
    if any(is_dir and name.endswith(".dist-info") for name, is_dir in entries.items()):
        return INSTALLED
    eggs = sorted(name for name in entries if name.endswith(".egg-info"))
    if eggs:
        raise PluginPackageError(f"{plugin}: holds {eggs[0]} but no .dist-info: an egg-info is what a development "
                                 f"install leaves in a source tree, not a plugin; submit the source folder with its "
                                 f"pyproject.toml, a wheel, or `pip install --no-deps --target DIR .` (docs/submitting.md)")
    raise PluginPackageError(f"{plugin}: no .dist-info folder and no pyproject.toml; {PACKAGING_HELP}")


def missing_build_tools() -> list[str]:
    """What this environment lacks to build a source tree offline: pip, and setuptools with bdist_wheel (setuptools
    >= 70.1 has it; older ones need the `wheel` package)."""
    missing = [name for name in ("pip", "setuptools") if importlib.util.find_spec(name) is None]
    setuptools = importlib.util.find_spec("setuptools")
    locations = list(setuptools.submodule_search_locations or []) if setuptools else []
    own = any((Path(p) / "command" / "bdist_wheel.py").is_file() for p in locations)
    if setuptools is not None and not own and importlib.util.find_spec("wheel") is None:
        missing.append("wheel (or setuptools >= 70.1)")
    return missing


def _member_target(name: str, where: str) -> PurePosixPath | None:
    """Where wheel member `name` goes in the unpacked folder (None: skipped); refuses a path that could leave it."""
    if not name or "\0" in name or "\\" in name or name.startswith("/") or re.match(r"\A[A-Za-z]:", name):
        raise PluginPackageError(f"{where}: member {name[:200]!r} is an absolute or malformed path; refused")
    parts = PurePosixPath(name).parts
    if any(part in ("..", ".") for part in name.rstrip("/").split("/")) or not parts:
        raise PluginPackageError(f"{where}: member {name[:200]!r} leaves the folder ('..'); refused")
    if parts[0].endswith(".data"):  # a wheel's .data/purelib|platlib go to the top; scripts, headers, data are unused
        return PurePosixPath(*parts[2:]) if len(parts) > 2 and parts[1] in ("purelib", "platlib") else None
    return PurePosixPath(*parts)


def unpack_wheel(wheel: Path, dest: Path, caps: WheelCaps = WheelCaps()) -> list[str]:
    """Unpack `wheel` into the new folder `dest` after checking every member (see the module docstring); returns
    the files written (relative paths). Runs in the sandbox: the zip is submitted bytes."""
    where = wheel.name
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as err:
        raise PluginPackageError(f"{where}: not a wheel (a zip file): {err}") from None
    with archive:
        members = archive.infolist()
        if len(members) > caps.members:
            raise PluginPackageError(f"{where}: {len(members)} members, over the cap of {caps.members}")
        plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        seen: set[str] = set()
        total = 0
        for info in members:
            target = _member_target(info.filename, where)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: made where zip records no Unix mode
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR) or (kind == stat.S_IFDIR and not info.is_dir()) \
                    or (kind == stat.S_IFREG and info.is_dir()):
                raise PluginPackageError(f"{where}: member {info.filename[:200]!r} is a link or special file; only "
                                         "regular files and folders are unpacked")
            if info.flag_bits & 0x1:
                raise PluginPackageError(f"{where}: member {info.filename[:200]!r} is encrypted; refused")
            if info.file_size > caps.member_bytes:
                raise PluginPackageError(f"{where}: member {info.filename[:200]!r} declares {info.file_size} bytes, "
                                         f"over the cap of {caps.member_bytes}")
            total += info.file_size
            if total > caps.bytes:
                raise PluginPackageError(f"{where}: members declare more than {caps.bytes} bytes in all; refused")
            if target is None or info.is_dir():
                continue
            if target.as_posix() in seen:
                raise PluginPackageError(f"{where}: member {info.filename[:200]!r} appears twice; refused")
            seen.add(target.as_posix())
            plan.append((info, target))
        if not any(t.parts[0].endswith(".dist-info") and len(t.parts) == 2 and t.parts[1] == "METADATA"
                   for _, t in plan):
            raise PluginPackageError(f"{where}: no *.dist-info/METADATA; not a wheel ({PACKAGING_HELP})")
        dest.mkdir(parents=True, exist_ok=False)
        root = dest.resolve()
        written = []
        for info, target in plan:
            path = root.joinpath(*target.parts)
            if root not in path.parents:
                raise PluginPackageError(f"{where}: member {info.filename[:200]!r} leaves the folder; refused")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(path, "xb") as out:  # zipfile stops at the declared size
                    shutil.copyfileobj(source, out, 1 << 20)
            except (OSError, zipfile.BadZipFile, RuntimeError) as err:  # a file where a folder goes, a bad CRC
                raise PluginPackageError(f"{where}: cannot unpack member {info.filename[:200]!r}: "
                                         f"{getattr(err, 'strerror', None) or err}") from None
            written.append(target.as_posix())
    return sorted(written)


def _pip_reason(output: str) -> str:
    """The informative line of a failed pip build (pip's own closing lines say only that it failed)."""
    lines = [line.strip() for line in output.splitlines()]
    useful = [line for line in lines if line and not PIP_GENERIC.search(line)]
    errors = [line for line in useful if re.search(r"error|Error|ERROR", line)]
    reason = (errors or useful or ["no output"])[-1][:300]
    if "BackendUnavailable" in output or re.search(r"No module named '(hatchling|flit_core|poetry|pdm|maturin)", output):
        reason += " (only setuptools is installed for builds; use build-backend setuptools.build_meta, or submit a wheel)"
    return reason


def build_wheel(source: Path, work: Path) -> Path:
    """Build the source tree `source` into a wheel under `work` (a copy of the tree is built: the tree itself stays
    untouched); returns the wheel. Runs in the sandbox: the build runs the submitter's code."""
    copy, wheels = work / "src", work / "wheel"

    def ignored(folder: str, names: list[str]) -> set[str]:
        top = {n for n in names if n in TOP_IGNORED} if Path(folder) == source else set()
        return top | set(shutil.ignore_patterns(*IGNORED)(folder, names))

    shutil.copytree(source, copy, ignore=ignored, copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(copy):  # the build writes its egg-info into the copy, whatever the tree's modes
        os.chmod(folder, 0o755)
    command = [sys.executable, "-I", "-B", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
               "--no-cache-dir", "--disable-pip-version-check", "--quiet", "-w", str(wheels), str(copy)]
    done = subprocess.run(command, capture_output=True, text=True, errors="replace", cwd=work)
    if done.returncode != 0:
        raise PluginPackageError(f"{source.name}: building the source tree failed: "
                                 f"{_pip_reason(done.stdout + done.stderr)}")
    built = sorted(wheels.glob("*.whl"))
    if len(built) != 1:
        raise PluginPackageError(f"{source.name}: the build made {len(built)} wheels, not one")
    return built[0]


def prepare_plugin(plugin: Path, work: Path, limits: SandboxLimits) -> PreparedPlugin:
    """The folder to import submitted plugin `plugin` from: an installed folder as it is; a wheel unpacked, or a
    source tree built and unpacked, in the sandbox under `limits` with `work` writable, into `work`/plugin. Raises
    PluginPackageError (one line) when it is neither, or when unpacking or building fails."""
    from histosynth.leaderboard.sandbox import SANDBOX_WORK, run_sandboxed, sandbox_input
    from histosynth.leaderboard.untrusted import TreeCaps, check_tree

    kind = classify(plugin)
    if kind == INSTALLED:
        return PreparedPlugin(plugin, kind, f"{kind}: {', '.join(_dist_infos(plugin))}")
    if kind == SOURCE and missing_build_tools():
        raise PluginPackageError(f"{plugin}: a source tree is built with pip and setuptools, and this environment "
                                 f"lacks {', '.join(missing_build_tools())}; submit a wheel instead")
    verb, name = ("unpack", "plugin.whl") if kind == WHEEL else ("build", "plugin-source")
    folder = Path(work) / "plugin"
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, "-I", "-B", "-m", "histosynth.leaderboard.plugin_package", verb,
               str(sandbox_input(name)), str(SANDBOX_WORK / "plugin")]
    result = run_sandboxed(command, work, limits, inputs={name: plugin})
    if not result.ok:
        last = (result.stderr.strip().splitlines() or [""])[-1]
        refused = result.returncode == EXIT_REFUSED and last.startswith("error: ")
        raise PluginPackageError(f"{plugin}: {last[len('error: '):] if refused else result.describe()}")
    caps = WheelCaps()
    tree = check_tree(folder, TreeCaps(files=caps.members, bytes=caps.bytes, file_bytes=caps.member_bytes),
                      what="unpacked plugin")
    action = "unpacked" if kind == WHEEL else "built in the sandbox and unpacked"
    return PreparedPlugin(folder, kind, f"{kind} {action}: {', '.join(_dist_infos(folder))}, {len(tree.files)} files")


def _dist_infos(folder: Path) -> list[str]:
    with os.scandir(folder) as listing:
        return sorted(e.name for e in listing if e.name.endswith(".dist-info") and e.is_dir(follow_symlinks=False))


def main(argv: list[str]) -> int:
    """`unpack WHEEL DEST` or `build SOURCE DEST` (in the sandbox); a refusal is one `error:` line, exit 2."""
    if len(argv) != 3 or argv[0] not in ("unpack", "build"):
        print("usage: python -m histosynth.leaderboard.plugin_package unpack|build IN OUT", file=sys.stderr)
        return EXIT_REFUSED
    verb, given, dest = argv[0], Path(argv[1]), Path(argv[2])
    try:
        if verb == "build":
            work = dest.parent / "plugin-build"
            wheel = build_wheel(given, work)
            unpack_wheel(wheel, dest)
            shutil.rmtree(work, ignore_errors=True)
        else:
            unpack_wheel(given, dest)
    except PluginPackageError as err:  # the host names the submitted path; the name inside would only confuse
        message = " ".join(str(err).split())
        print(f"error: {message.removeprefix(f'{given.name}: ')}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
