"""Class-schema registry: the only place class ids are defined.

Every schema reserves id 0 for background and id 255 for "ignore" (e.g. Camelyon16's `_2` exclusion
regions, unlabeled pixels). Readers map each source's own numbering onto these ids and say how in their
docstrings. Sources for the orders: each dataset's release notes, as cited in its reader (histosynth.sources).

PanNuke pitfall: codebases number its classes differently (npy channel order vs CoSyn vs others). The
`pannuke` schema here follows the npy channel order: channel c -> id c + 1.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np

from histosynth.deprecated import renamed_field, renamed_names
from histosynth.registry import Registry

BACKGROUND_ID = 0
IGNORE_ID = 255
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ClassInfo:
    """One class: its id in the schema, a readable name, and an overlay color."""

    id: int
    name: str
    color: RGB


renamed_field(ClassInfo, "colour", "color")  # the British spelling, for one release


@dataclass(frozen=True)
class ClassSchema:
    """A named set of classes for tissue maps or nuclei.

    `classes` lists background (id 0) first and then the real classes with contiguous ids 1..K;
    `IGNORE_ID` (255) is valid in every tissue map without being listed.
    """

    name: str
    kind: str  # "tissue" or "nuclei"
    classes: tuple[ClassInfo, ...]
    description: str = ""
    source_order: str = ""  # how the source's own ids map here
    _by_id: dict[int, ClassInfo] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("tissue", "nuclei"):
            raise ValueError(f"schema {self.name!r}: kind must be 'tissue' or 'nuclei', not {self.kind!r}")
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))) or not ids:
            raise ValueError(f"schema {self.name!r}: ids must be 0 (background), 1..K contiguous, got {ids}")
        object.__setattr__(self, "_by_id", {c.id: c for c in self.classes})

    @property
    def num_classes(self) -> int:
        """Number of ids including background (K + 1)."""
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """Class names indexed by id (background first)."""
        return [c.name for c in self.classes]

    @property
    def foreground_ids(self) -> list[int]:
        """Ids 1..K."""
        return [c.id for c in self.classes[1:]]

    def valid_ids(self, allow_ignore: bool = True) -> set[int]:
        """Ids allowed in a map of this schema."""
        ids = set(self._by_id)
        return ids | {IGNORE_ID} if allow_ignore else ids

    def __getitem__(self, class_id: int) -> ClassInfo:
        if class_id == IGNORE_ID:
            return ClassInfo(IGNORE_ID, "ignore", (0, 0, 0))
        try:
            return self._by_id[class_id]
        except KeyError:
            raise KeyError(f"class id {class_id} is not in schema {self.name!r} (ids 0..{len(self.classes) - 1}, 255)") from None

    def id_of(self, name: str) -> int:
        """The id of the class called `name` (case-insensitive)."""
        for c in self.classes:
            if c.name.lower() == name.lower():
                return c.id
        raise KeyError(f"schema {self.name!r} has no class {name!r} (classes: {', '.join(self.names)})")

    def palette(self) -> dict[int, RGB]:
        """Id -> RGB color for overlays (ignore drawn black)."""
        return {c.id: c.color for c in self.classes} | {IGNORE_ID: (0, 0, 0)}


def _schema(name: str, kind: str, classes: list[tuple[str, RGB]], description: str, source_order: str) -> ClassSchema:
    infos = [ClassInfo(0, "background", (255, 255, 255))]
    infos += [ClassInfo(i, n, c) for i, (n, c) in enumerate(classes, start=1)]
    return ClassSchema(name, kind, tuple(infos), description, source_order)


def distinct_colors(n: int) -> list[RGB]:
    """`n` well-separated colors (golden-ratio hue steps) for schemas with many classes."""
    colors = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75 if i % 2 else 0.95, 0.95 if i % 3 else 0.75)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


_PSEUDO = re.compile(r"\Apseudo-(tissue|nuclei)-k([1-9][0-9]{0,2})\Z")  # \Z: `$` would accept a trailing newline
MAX_PSEUDO_CLASSES = 254  # ids 1..254; 255 is ignore


def _resolve_pseudo(name: str) -> ClassSchema | None:
    """Build `pseudo-tissue-kN` / `pseudo-nuclei-kN` (self-supervised maps) for any N in 1..254."""
    match = _PSEUDO.match(name)
    if not match or int(match.group(2)) > MAX_PSEUDO_CLASSES:
        return None
    kind, k = match.group(1), int(match.group(2))
    label = "phenotype" if kind == "tissue" else "nucleus-cluster"
    return _schema(
        name,
        kind,
        [(f"{label}-{i}", c) for i, c in enumerate(distinct_colors(k), start=1)],
        f"{k} self-supervised {kind} clusters (histosynth.labels); cluster j -> id j + 1",
        "cluster index j (0-based) -> id j + 1",
    )


SCHEMAS: Registry[ClassSchema] = Registry("class schema", resolver=_resolve_pseudo)

_BUILTIN = [
    _schema(
        "camelyon16", "tissue",
        [("normal", (60, 160, 60)), ("tumor", (220, 30, 30))],
        "Camelyon16 lymph-node sections: tumor vs non-tumor tissue",
        "ASAP XML groups Tumor/_0/_1 -> tumor (2); _2 (exclusion) -> 255 ignore; other tissue -> normal (1)",
    ),
    _schema(
        "panda-radboud", "tissue",
        [("stroma", (0, 150, 255)), ("benign epithelium", (0, 200, 0)), ("gleason 3", (255, 220, 0)),
         ("gleason 4", (255, 120, 0)), ("gleason 5", (220, 0, 0))],
        "PANDA, Radboud provider: semi-automatic Gleason-pattern masks",
        "mask red channel 0..5 -> same ids (0 = background/unknown)",
    ),
    _schema(
        "panda-karolinska", "tissue",
        [("benign tissue", (0, 200, 0)), ("cancerous tissue", (220, 0, 0))],
        "PANDA, Karolinska provider: pathologist masks",
        "mask red channel 0..2 -> same ids",
    ),
    _schema(
        "pannuke", "nuclei",
        [("neoplastic", (255, 0, 0)), ("inflammatory", (0, 255, 0)), ("connective", (0, 0, 255)),
         ("dead", (255, 255, 0)), ("epithelial", (255, 165, 0))],
        "PanNuke nuclei types in masks.npy channel order",
        "masks.npy channel c (0..4) -> id c + 1; channel 5 (background) -> 0. CoSyn uses 1 Inflammatory, "
        "2 Connective, 3 Dead, 4 Epithelial, 5 Neoplastic: remap before comparing",
    ),
    _schema(
        "lizard", "nuclei",
        [("neutrophil", (0, 0, 0)), ("epithelial", (0, 255, 0)), ("lymphocyte", (255, 0, 0)),
         ("plasma", (0, 191, 255)), ("eosinophil", (0, 0, 255)), ("connective", (255, 255, 0))],
        "Lizard colon nuclei (20x)",
        "`class` column 1..6 of the .mat -> same ids",
    ),
    _schema(
        "consep", "nuclei",
        [("other", (255, 0, 255)), ("inflammatory", (255, 0, 0)), ("healthy epithelial", (0, 255, 0)),
         ("dysplastic/malignant epithelial", (0, 128, 0)), ("fibroblast", (0, 0, 255)), ("muscle", (0, 255, 255)),
         ("endothelial", (255, 255, 0))],
        "CoNSeP, the seven original classes",
        "`inst_type`/`type_map` 1..7 -> same ids",
    ),
    _schema(
        "consep-4", "nuclei",
        [("other", (255, 0, 255)), ("inflammatory", (255, 0, 0)), ("epithelial", (0, 255, 0)),
         ("spindle-shaped", (0, 0, 255))],
        "CoNSeP merged to four classes as HoVer-Net trains on it",
        "consep 1 -> 1; 2 -> 2; 3, 4 -> 3; 5, 6, 7 -> 4",
    ),
    _schema(
        "monusac", "nuclei",
        [("epithelial", (255, 0, 0)), ("lymphocyte", (255, 255, 0)), ("neutrophil", (0, 0, 255)),
         ("macrophage", (0, 255, 0))],
        "MoNuSAC nuclei (4 organs)",
        "XML annotation names -> ids as in the challenge's own mask script: Epithelial 1, Lymphocyte 2, "
        "Neutrophil 3, Macrophage 4 (other codebases, e.g. eva, order them differently)",
    ),
    _schema(
        "cosyn-pannuke", "nuclei",
        [("inflammatory", (0, 255, 0)), ("connective", (0, 0, 255)), ("dead", (255, 255, 0)),
         ("epithelial", (255, 165, 0)), ("neoplastic", (255, 0, 0))],
        "PanNuke nuclei types as CoSyn (hvcl/CoSyn-ContextCondNucAug) numbers them",
        "CoSyn class ids 1 Inflammatory, 2 Connective, 3 Dead, 4 Epithelial, 5 Neoplastic -> same ids; "
        "remap_ids(ids, 'cosyn-pannuke', 'pannuke') gives the masks.npy channel order",
    ),
    _schema(
        "simulator-tissue", "tissue",
        [("stroma", (0, 200, 200)), ("epithelium", (80, 120, 255)), ("tumor", (220, 30, 30)),
         ("necrosis", (140, 140, 140))],
        "Procedural tissue regions drawn by the `simulator` source",
        "the simulator writes these ids directly",
    ),
]
for _s in _BUILTIN:
    SCHEMAS.register(_s.name, _s, _s.description)

# Id remaps between schemas (source id -> target id); background and ignore map to themselves.
REMAPS: dict[tuple[str, str], dict[int, int]] = {
    ("consep", "consep-4"): {1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: 4, 7: 4},
    # CoSyn's PanNuke ids (REFERENCE.md section 4) <-> masks.npy channel order (channel c -> id c + 1)
    ("cosyn-pannuke", "pannuke"): {1: 2, 2: 3, 3: 4, 4: 5, 5: 1},
    ("pannuke", "cosyn-pannuke"): {2: 1, 3: 2, 4: 3, 5: 4, 1: 5},
}

Unlisted = Literal["keep", "ignore"]
UNLISTED_RULES: tuple[Unlisted, ...] = ("keep", "ignore")


def get_schema(name: str) -> ClassSchema:
    """The schema called `name` (built-in or `pseudo-{tissue,nuclei}-kN`); unknown names suggest close ones."""
    return SCHEMAS.get(name)


def remap_table(mapping: Mapping[int, int], unlisted: Unlisted) -> np.ndarray:
    """(256,) uint8 lookup table of a class-id remap: `table[ids]` remaps an array of ids.

    Ids `mapping` lists go to their targets. `unlisted` is the rule for every other id, and has no default because
    the two rules give other numbers: "keep" leaves it as it is (renumbering some classes of one labeling, where
    background and ignore stay), "ignore" makes it IGNORE_ID (a class the target has no place for must not be
    scored as one).
    """
    if unlisted not in UNLISTED_RULES:
        raise ValueError(f"unlisted ids are kept or ignored ({', '.join(UNLISTED_RULES)}), not {unlisted!r}")
    table = np.arange(256, dtype=np.uint8) if unlisted == "keep" else np.full(256, IGNORE_ID, np.uint8)
    for source, target in mapping.items():
        if not (0 <= int(source) <= 255 and 0 <= int(target) <= 255):
            raise ValueError(f"class ids are 0..255; cannot remap {source} -> {target}")
        table[int(source)] = int(target)
    return table


def remap_ids(ids: np.ndarray, source: str, target: str) -> np.ndarray:
    """Map an array of `source`-schema ids to `target`-schema ids by a registered remap (REMAPS, e.g. consep ->
    consep-4); ids the remap does not list, background and ignore among them, are kept."""
    table = REMAPS.get((source, target))
    if table is None:
        raise KeyError(f"no id remap from {source!r} to {target!r} (known: {sorted(REMAPS)})")
    arr = np.asarray(ids)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"ids outside 0..255 cannot be remapped from {source!r}")
    return remap_table(table, "keep")[arr.astype(np.intp)].astype(arr.dtype)


# The British spelling of this name, for one release.
__getattr__ = renamed_names(__name__, {"distinct_colours": "distinct_colors"}, globals())
