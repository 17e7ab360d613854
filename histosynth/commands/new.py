"""`histosynth new generator NAME`: write a working generator plugin to start from, as a package of its own.

The skeleton (histosynth.commands.skeleton) is a small conditional generator trained in histosynth's shared loop,
with its entry point, metadata, presets and a contract test; it passes `histosynth submit --check` as written.
The walkthrough is docs/submitting.md.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from pathlib import Path

from histosynth import options as opt
from histosynth.errors import InputError, OutputExistsError

NAME = re.compile(r"\A[a-z][a-z0-9-]{0,63}\Z")


def generator_name(text: str) -> str:
    """A new generator's name: 1-64 of a-z, 0-9 and '-', starting with a letter (its package name is the name with
    '_' for '-', so it must be an importable identifier); not a built-in generator's name."""
    from histosynth.generators.registry import builtin_generators

    if not NAME.match(text):
        raise argparse.ArgumentTypeError(f"must be 1-64 of a-z, 0-9 and '-', starting with a letter (its package is "
                                         f"the name with '_' for '-'), got {text[:80]!r}")
    if text in builtin_generators():
        raise argparse.ArgumentTypeError(f"{text!r} is a built-in generator; a plugin needs a name of its own")
    return text


def package_name(name: str) -> str:
    """The import package of generator `name`: '-' becomes '_'."""
    return name.replace("-", "_")


def class_name(name: str) -> str:
    """The Generator class of generator `name`: tissue-painter -> TissuePainterGenerator."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("-") if part) + "Generator"


def _check_package(package: str) -> None:
    """Refuse a package name Python would resolve to something else (a keyword, the standard library, an installed
    package): the plugin would be shadowed, or would shadow it."""
    import importlib.util

    if keyword.iskeyword(package) or package in sys.stdlib_module_names:
        raise InputError(f"package {package!r}: a Python keyword or standard-library module; choose another name")
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin is not None:
        raise InputError(f"package {package!r}: a module of that name is already importable here ({spec.origin}); "
                         "choose another name")


def write_generator(name: str, out: Path) -> list[str]:
    """Write the skeleton of generator `name` into the new folder `out` (all at once: nothing is left on failure);
    returns the files written, relative to `out`."""
    from histosynth.atomic import atomic_directory
    from histosynth.commands.skeleton import render

    if out.exists() or out.is_symlink():
        raise OutputExistsError(f"{out}: already exists; `histosynth new` writes a new folder, choose another --out")
    package = package_name(name)
    _check_package(package)
    title = name.replace("-", " ").capitalize()
    files = render(name, package, class_name(name), title)
    with atomic_directory(out, overwrite=False) as partial:
        for relative, text in files.items():
            (partial / relative).parent.mkdir(parents=True, exist_ok=True)
            (partial / relative).write_text(text, encoding="utf-8")
    return sorted(files)


def run(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else Path(args.name)
    files = write_generator(args.name, out)
    print(f"wrote {out}/: {', '.join(files)}")
    print(f"next: {out}/README.md (the contract test, packaging, training, `histosynth submit --check`); the guide "
          "is docs/submitting.md")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser("new", help="start a plugin: `histosynth new generator NAME` writes a working skeleton",
                              description="Write the skeleton of a plugin, a package outside histosynth.")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    generator = kinds.add_parser(
        "generator", help="a generator plugin: package, entry point, metadata, model, presets, contract test",
        description="Write a working generator plugin into a new folder: pyproject.toml (setuptools, the entry point "
                    "NAME in group histosynth.generators), the package (meta.py: GeneratorMeta with a BibTeX "
                    "citation to fill in; presets.py; model.py: a small conv net that paints a patch from its tissue "
                    "map, trained through histosynth's training loop with a TrainStep), a contract test and a README "
                    "with the next commands. It passes `histosynth submit --check` as written. Guide: "
                    "docs/submitting.md.")
    generator.add_argument("name", metavar="NAME", type=generator_name,
                           help="the generator's registered name: a-z, 0-9 and '-', starting with a letter, at most 64")
    generator.add_argument("--out", type=opt.output_folder,
                           help="the folder to create (default: ./NAME); an existing one is refused")
    generator.set_defaults(handler=run)
