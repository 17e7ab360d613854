"""`histosynth ls`: list what is registered, without importing torch."""

from __future__ import annotations

import argparse
import importlib

from histosynth.errors import UnknownNameError

# kind -> "module:attribute" of a torch-free Registry; kinds whose module does not exist yet are skipped.
CATALOG = {
    "sources": "histosynth.sources:SOURCES",
    "schemas": "histosynth.classes:SCHEMAS",
    "generators": "histosynth.generators.registry:GENERATORS",
    "encoders": "histosynth.benchmark.encoders:ENCODERS",
    "datasets": "histosynth.data_cards.sets:DATASETS",
}


def _registry(kind: str):
    module_name, _, attr = CATALOG[kind].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            return None  # that part of histosynth has not landed yet
        raise
    return getattr(module, attr)


def list_kind(kind: str) -> list[str]:
    """Printable lines for one registry kind."""
    registry = _registry(kind)
    if kind == "generators" and registry is not None:
        from histosynth.generators.plugins import load_plugins

        load_plugins()
    if registry is None or not len(registry):
        return [f"{kind}: none registered yet"]
    lines = [f"{kind}:"]
    width = max(len(e.name) for e in registry.entries())
    lines += [f"  {e.name:<{width}}  {e.summary}" for e in registry.entries()]
    if kind == "schemas":
        lines.append(f"  {'pseudo-tissue-kN':<{width}}  self-supervised tissue phenotypes, any N in 1..254 (e.g. pseudo-tissue-k10)")
        lines.append(f"  {'pseudo-nuclei-kN':<{width}}  self-supervised nuclear classes, any N in 1..254")
    return lines


def run(args: argparse.Namespace) -> int:
    unknown = [k for k in args.kinds if k not in CATALOG]
    if unknown:
        raise UnknownNameError(f"cannot list {', '.join(unknown)}; choose from {', '.join(CATALOG)}")
    for i, kind in enumerate(args.kinds or list(CATALOG)):
        print(("\n" if i else "") + "\n".join(list_kind(kind)))
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser("ls", help="list sources, class schemas, generators, encoders, datasets",
                              description="List registered sources, class schemas, generators, encoders and released/planned datasets "
                              "(names and one-line summaries; imports no model code).")
    parser.add_argument("kinds", nargs="*", metavar="KIND", help=f"what to list: {', '.join(CATALOG)} (default: everything)")
    parser.set_defaults(handler=run)
