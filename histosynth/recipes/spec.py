"""Recipe files: structured YAML, validated on load, with `${var}` values resolved for one scale.

A recipe names its inputs (bound at run time with `--input NAME=PATH`), per-scale variables (`tiny`, `demo`,
`full`) and an ordered list of steps. Each step is a mapping with `step: KIND` (a kind of histosynth.recipes.kinds:
source, pseudolabel, sample, split, train, generate, score, card, publish, table, curve, figure), an optional unique
`name` (default: the kind) and that kind's fields. Values may use `${var}` (a scale variable) and `${input:NAME}` (a bound input); path fields are relative
to the run folder: each must be a non-empty relative path inside it, and the paths steps write are distinct and
never inside one another (a rerun of one step replaces its output folder whole). A card file of data_cards/cards may
point to its recipe with `recipe: PATH`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from histosynth.errors import InputError
from histosynth.recipes.kinds import STEP_KINDS, step_kind
from histosynth.registry import RegistryError

FORMAT = 1
SCALES = ("tiny", "demo", "full")
_REF = re.compile(r"\$\{([^}]*)\}")
_TOP_FIELDS = {"recipe", "format", "description", "card", "inputs", "scales", "steps"}
# \A...\Z, not ^...$: `$` also matches before a trailing newline. The name makes the default run folder's name.
NAME = re.compile(r"\A[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,63}\Z")
INPUT_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
MAX_RECIPE_BYTES = 1 << 20
MAX_VALUES = 100_000  # YAML values, each alias counted where it is used (an alias bomb is tiny on disk)
RESERVED = (".recipe", "report.json", "report.md")
"""What the runner itself keeps in a run folder: no step may write there."""


class RecipeError(InputError):
    """A recipe is malformed or cannot be bound; the message names the file, the step and the field."""


@dataclass
class Step:
    """One resolved step: its name, kind and fields (with `${...}` substituted)."""

    name: str
    kind: str
    fields: dict[str, Any]

    def reads(self) -> list[str]:
        """Run-folder paths this step reads."""
        paths: list[str] = []
        for key in step_kind(self.kind).reads:
            value = self.fields.get(key)
            paths += value if isinstance(value, list) else [] if value is None else [value]
        return paths

    def writes(self) -> list[str]:
        """Run-folder paths this step writes."""
        return [self.fields[f] for f in step_kind(self.kind).writes]


@dataclass
class Recipe:
    """A recipe resolved for one scale and one set of inputs."""

    name: str
    path: Path
    scale: str
    card: str | None
    steps: list[Step]
    inputs: dict[str, Path]
    text_hash: str  # sha256 of the recipe file (and of the card file that points to it)
    description: str = ""
    variables: dict[str, Any] = field(default_factory=dict)

    def step(self, name: str) -> Step:
        """The step called `name`; unknown names list the known ones."""
        for step in self.steps:
            if step.name == name:
                return step
        raise RecipeError(f"{self.path}: no step {name!r} (steps: {', '.join(s.name for s in self.steps)})")


@dataclass
class StepContext:
    """What a step function gets besides its step: the run folder, the recipe, a log, and whether to resume
    (the same step started before with the same content key and did not finish)."""

    run: Path
    recipe: Recipe
    log: Callable[[str], None] = print
    resume: bool = False


def _fail(path: Path, where: str, problem: str) -> RecipeError:
    return RecipeError(f"{path}: {where}: {problem}")


def _read_yaml(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: {path.stat().st_size} bytes; a recipe is at most {MAX_RECIPE_BYTES}")
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise RecipeError(f"{path}: cannot read the recipe ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    except RecursionError:
        raise RecipeError(f"{path}: invalid YAML (nested too deeply)") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping")
    _count_values(raw, path)
    return raw


def _count_values(raw: Any, path: Path) -> None:
    """Refuse a document of more than MAX_VALUES values, aliases expanded: steps walk every value."""
    stack, seen = [raw], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise RecipeError(f"{path}: more than {MAX_VALUES} values (aliases counted where used); not a recipe")
        if isinstance(node, dict):
            stack += [*node.keys(), *node.values()]
        elif isinstance(node, list):
            stack += node


def _substitute(value: Any, variables: dict[str, Any], inputs: dict[str, Path], where: str, path: Path) -> Any:
    """`value` with every `${var}` / `${input:NAME}` replaced; a whole-string reference keeps the variable's type."""
    if isinstance(value, dict):
        return {k: _substitute(v, variables, inputs, f"{where}.{k}", path) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables, inputs, f"{where}[{i}]", path) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    if "${" in _REF.sub("", value):
        raise _fail(path, where, f"unresolved reference in {value[:80]!r}: write ${{name}} or ${{input:NAME}}, closed "
                    "by '}'")

    def lookup(ref: str) -> Any:
        if ref.startswith("input:"):
            name = ref[len("input:"):]
            if name not in inputs:
                raise _fail(path, where, f"input {name!r} is not bound: pass --input {name}=PATH")
            return str(inputs[name])
        if ref not in variables:
            raise _fail(path, where, f"unknown variable ${{{ref}}} (this scale defines: {', '.join(sorted(variables))})")
        return variables[ref]

    whole = _REF.fullmatch(value)
    if whole:  # a scale variable may itself hold `${input:NAME}` (e.g. weights only the full scale needs)
        found = lookup(whole.group(1))
        return found if whole.group(1).startswith("input:") else _substitute(found, {}, inputs, where, path)
    return _REF.sub(lambda m: str(lookup(m.group(1))), value)


def recipe_file(path: Path | str) -> tuple[Path, Path | None]:
    """(recipe file, card file or None): a card of data_cards/cards that says `recipe: PATH` points to its recipe."""
    path = Path(path)
    raw = _read_yaml(path)
    if "versions" in raw and not raw.get("recipe"):
        raise RecipeError(f"{path}: this dataset card names no recipe (add `recipe: PATH` to it)")
    if "steps" not in raw and isinstance(raw.get("recipe"), str) and "card" in raw:
        target = (path.parent / raw["recipe"]).resolve()
        if not target.is_file():
            raise RecipeError(f"{path}: `recipe: {raw['recipe']}` does not name a file (looked for {target})")
        return target, path
    return path, None


def parse_inputs(pairs: list[str]) -> dict[str, Path]:
    """`["camelyon16=/data/c16", ...]` -> {name: path}; a malformed pair is a one-line error."""
    bound: dict[str, Path] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not INPUT_NAME.match(name.strip()) or not value or "\0" in value:
            raise RecipeError(f"--input {pair[:100]!r}: expected NAME=PATH (NAME of letters, digits, '.', '_', '-')")
        if name.strip() in bound:
            raise RecipeError(f"--input {name.strip()}: given twice")
        bound[name.strip()] = Path(value).expanduser().resolve()
    return bound


def load_recipe(path: Path | str, scale: str = "tiny", inputs: dict[str, Path] | None = None,
                require_inputs: bool = True) -> Recipe:
    """Read, validate and resolve a recipe (or a card pointing to one) for `scale` with `inputs` bound.

    With `require_inputs=False` (plan, status) unbound inputs resolve to a `<NAME>` placeholder."""
    recipe_path, card_path = recipe_file(path)
    raw = _read_yaml(recipe_path)
    digest = hashlib.sha256(recipe_path.read_bytes())
    if card_path is not None:
        digest.update(card_path.read_bytes())
    extra = sorted(set(raw) - _TOP_FIELDS)
    if extra:
        raise _fail(recipe_path, "top level", f"unknown fields {extra} (known: {sorted(_TOP_FIELDS)})")
    if raw.get("format") != FORMAT:
        raise _fail(recipe_path, "format", f"must be {FORMAT}, got {raw.get('format')!r}")
    name = raw.get("recipe")
    if not isinstance(name, str) or not NAME.match(name):
        raise _fail(recipe_path, "recipe", f"must name the recipe: 1-64 of letters, digits, '-', '_' and single '.', "
                    f"starting with a letter or digit; got {str(name)[:80]!r}")
    if scale not in SCALES:
        raise RecipeError(f"--scale {scale!r}: choose from {', '.join(SCALES)}")
    scales = raw.get("scales") or {}
    if not isinstance(scales, dict) or sorted(scales) != sorted(SCALES):
        raise _fail(recipe_path, "scales", f"must define exactly {', '.join(SCALES)}, got {sorted(scales) if isinstance(scales, dict) else scales!r}")
    variables = scales[scale] or {}
    if not isinstance(variables, dict):
        raise _fail(recipe_path, f"scales.{scale}", "must map variable names to values")
    declared = raw.get("inputs") or {}
    if not isinstance(declared, dict):
        raise _fail(recipe_path, "inputs", "must map input names to {help, scales}")
    inputs = dict(inputs or {})
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise RecipeError(f"{recipe_path}: --input {unknown[0]}: the recipe has no input {unknown[0]!r} "
                          f"(inputs: {', '.join(declared) or 'none'})")
    for input_name, spec in declared.items():
        needed = (spec or {}).get("scales", list(SCALES)) if isinstance(spec, dict) else list(SCALES)
        if input_name not in inputs:
            if require_inputs and scale in needed:
                help_text = (spec or {}).get("help", "") if isinstance(spec, dict) else ""
                raise RecipeError(f"{recipe_path}: input {input_name!r} is needed at scale {scale}: pass "
                                  f"--input {input_name}=PATH" + (f" ({help_text})" if help_text else ""))
            inputs[input_name] = Path(f"<{input_name}>")
        elif not inputs[input_name].exists():
            raise RecipeError(f"{recipe_path}: --input {input_name}={inputs[input_name]}: no such file or folder")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise _fail(recipe_path, "steps", "must be a non-empty list of steps")
    steps: list[Step] = []
    written: dict[str, str] = {}
    for index, entry in enumerate(steps_raw):
        steps.append(_step(recipe_path, index, entry, variables, inputs, written, {s.name for s in steps}))
    card = raw.get("card")
    if card_path is not None:
        card = card_path.stem
    return Recipe(name, recipe_path, scale, card, steps, inputs, digest.hexdigest(), raw.get("description", ""),
                  dict(variables))


def _step(path: Path, index: int, entry: Any, variables: dict, inputs: dict, written: dict[str, str],
          names: set[str]) -> Step:
    if not isinstance(entry, dict):
        raise _fail(path, f"steps[{index}]", "must be a mapping with `step: KIND`")
    kind = entry.get("step")
    step_name = entry.get("name", kind)
    where = f"step {step_name!r}" if step_name else f"steps[{index}]"
    if not isinstance(kind, str):
        raise _fail(path, f"{where} field 'step'", f"unknown step kind {kind!r} (known: {', '.join(STEP_KINDS)})")
    try:
        spec = step_kind(kind)
    except RegistryError as err:
        raise _fail(path, f"{where} field 'step'", str(err)) from None
    if step_name in names:
        raise _fail(path, where, "a step of this name comes earlier; give one a distinct `name`")
    given = {k: v for k, v in entry.items() if k not in ("step", "name")}
    for key in spec.required:
        if given.get(key) is None:
            raise _fail(path, f"{where} ({kind}) field {key!r}", "is required")
    extra = sorted(set(given) - set(spec.required) - set(spec.optional))
    if extra:
        raise _fail(path, f"{where} ({kind}) field {extra[0]!r}",
                    f"unknown field (a {kind} step takes {', '.join(spec.required + spec.optional)})")
    fields = {k: _substitute(v, variables, inputs, f"{where} ({kind}) field {k!r}", path) for k, v in given.items()}
    for key in spec.reads:  # paths are kept normalized, so the runner finds each one's writer by its text
        field_where = f"{where} ({kind}) field {key!r}"
        value = fields.get(key)
        items = value if isinstance(value, list) else [] if value is None else [value]
        normalized = [_run_path(item, path, field_where) for item in items]
        for item, read in zip(items, normalized, strict=True):
            if read not in written:
                raise _fail(path, field_where, f"{item!r} is not written by an earlier step (written: "
                            f"{', '.join(written) or 'nothing yet'})")
        if value is not None:
            fields[key] = normalized if isinstance(value, list) else normalized[0]
    for key in spec.writes:
        field_where = f"{where} ({kind}) field {key!r}"
        out = _run_path(fields[key], path, field_where)
        for other, writer in written.items():
            if out == other or _inside(out, other) or _inside(other, out):
                relation = "the same as" if out == other else "inside" if _inside(out, other) else "around"
                raise _fail(path, field_where, f"{fields[key]!r} is {relation} {other!r}, which step {writer!r} writes; "
                            "each step writes its own folder")
        written[out] = step_name
        fields[key] = out
    return Step(step_name, kind, fields)


def _run_path(item: Any, path: Path, where: str) -> str:
    """A step's run-folder path, normalized ("a/./b" -> "a/b"); refuses what is not a named path inside the run
    folder (absolute, "..", empty, "." itself) and the runner's own files."""
    parts = Path(item).parts if isinstance(item, str) and "\0" not in item else None
    if not parts or Path(item).is_absolute() or ".." in parts or parts[0].startswith("~"):
        raise _fail(path, where, f"must be a path inside the run folder (relative, without '..' or '~', not the run "
                    f"folder itself), got {str(item)[:100]!r}")
    if parts[0] in RESERVED:
        raise _fail(path, where, f"{item!r}: {parts[0]} is the runner's own ({', '.join(RESERVED)} are reserved)")
    return "/".join(parts)


def _inside(inner: str, outer: str) -> bool:
    return inner.startswith(outer + "/")


def canonical(value: Any) -> str:
    """A stable JSON text of options (sorted keys) for content keys."""
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
