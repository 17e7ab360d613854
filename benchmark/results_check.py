"""Checks a results file passes before its numbers are believed: bounded reading (size, nesting, integer digits,
UTF-8, no NaN/Infinity) and each number against the metric registry (finite, in the metric's range, inside its own
confidence interval, counts as whole numbers >= 0). Every failure is a ResultsFormatError naming the file and field.

Text that reaches tables and pages (names, metrics, encoders, hashes) must be printable on one line: a newline in a
subject name would break a Markdown table row, a control character a terminal.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from histosynth.benchmark.metric_registry import MetricSpec
from histosynth.errors import InputError

MAX_RESULTS_BYTES = 64 << 20  # a results file with per-sample values of 100k pairs is a few MiB
MAX_DEPTH = 32  # a results file nests 4 or 5 deep
MAX_INT_DIGITS = 18  # counts and versions fit an int64
MAX_TEXT = 512
CI_TOLERANCE = 1e-9  # relative slack for an estimate on its interval's bound (floating point rounding)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = np.frombuffer(b"[{", np.uint8)


class ResultsFormatError(InputError):
    """A results file does not follow the schema; the message names the file and the field."""


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """The deepest [ / { nesting of a JSON text (brackets inside strings do not count); stops counting past
    `limit`, so a hostile file costs one pass."""
    bare = _STRING.sub("", text).encode("utf-8", "replace")
    brackets = np.frombuffer(bare.translate(None, bytes(set(range(256)) - set(b"[]{}"))), np.uint8)
    if not len(brackets):
        return 0
    steps = np.where(np.isin(brackets, _OPEN), 1, -1)
    return int(min(np.cumsum(steps).max(), limit + 1))


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} overflows a float")
    return value


def read_results_json(path: Path) -> Any:
    """The parsed JSON of a results file, read within caps: a regular file of at most MAX_RESULTS_BYTES, UTF-8,
    nested at most MAX_DEPTH deep, integers of at most MAX_INT_DIGITS digits, no NaN or Infinity."""
    try:
        info = path.stat()
        if not path.is_file():
            raise ResultsFormatError(f"{path}: not a regular file (a results file is a JSON file)")
        if info.st_size > MAX_RESULTS_BYTES:
            raise ResultsFormatError(f"{path}: {info.st_size} bytes; a results file is at most {MAX_RESULTS_BYTES}")
        raw = path.read_bytes()
    except OSError as err:
        raise ResultsFormatError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ResultsFormatError(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})") from None
    if nesting_depth(text) > MAX_DEPTH:
        raise ResultsFormatError(f"{path}: not a results file: JSON nested more than {MAX_DEPTH} deep")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int, parse_float=_finite_float)
    except (ValueError, RecursionError) as err:
        raise ResultsFormatError(f"{path}: not valid JSON ({' '.join(str(err).split())[:160]})") from None


def check_text(value: Any, where: str, optional: bool = False) -> str | None:
    """`value` if it is one printable line of at most MAX_TEXT characters (None too, when `optional`)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ResultsFormatError(f"{where}: expected text, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise ResultsFormatError(f"{where}: {len(value)} characters; at most {MAX_TEXT}")
    bad = next((ch for ch in value if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise ResultsFormatError(f"{where}: holds the control character {bad!r} ({value[:60]!r}); names are one "
                                 "printable line")
    return value


def check_count(value: Any, where: str, optional: bool = True) -> int | None:
    """A whole number >= 0 (not a float, not a bool); None when `optional`."""
    if value is None and optional:
        return None
    if type(value) is not int or value < 0:
        raise ResultsFormatError(f"{where}: expected a whole number >= 0, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if type(value) not in (int, float):
        raise ResultsFormatError(f"{where}: expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ResultsFormatError(f"{where}: {str(value)[:20]}... is too large for a number") from None
    if not math.isfinite(number):
        raise ResultsFormatError(f"{where}: not finite")
    return number


def check_numbers(item: dict[str, Any], spec: MetricSpec, where: str) -> None:
    """One result's numbers: the value in the metric's range, a CI that is both bounds or neither, ordered and
    holding the value, a confidence level in (0, 1), counts >= 0."""
    value = None if item.get("value") is None else _number(item["value"], f"{where}value")
    if value is not None and not spec.low <= value <= spec.high:
        raise ResultsFormatError(f"{where}value: {value:g} is outside {spec.name}'s range [{spec.low:g}, {spec.high:g}]")
    low, high = item.get("ci_low"), item.get("ci_high")
    if (low is None) != (high is None):
        raise ResultsFormatError(f"{where}ci_low/ci_high: give both bounds of the interval or neither")
    if low is not None:
        low, high = _number(low, f"{where}ci_low"), _number(high, f"{where}ci_high")
        if low > high:
            raise ResultsFormatError(f"{where}ci_low: {low:g} is above ci_high {high:g}")
        slack = CI_TOLERANCE * max(1.0, abs(value or 0.0))
        if value is not None and not low - slack <= value <= high + slack:
            raise ResultsFormatError(f"{where}value: {value:g} lies outside its interval [{low:g}, {high:g}]")
    level = item.get("ci_level")
    if level is not None and not 0 < _number(level, f"{where}ci_level") < 1:
        raise ResultsFormatError(f"{where}ci_level: {level!r} is not a confidence level in (0, 1)")
    for key in ("n_real", "n_fake"):
        check_count(item.get(key), f"{where}{key}")
    for key in ("encoder", "subject"):
        check_text(item.get(key), f"{where}{key}", optional=True)
    if not isinstance(item.get("extra", {}), dict):
        raise ResultsFormatError(f"{where}extra: expected an object")


def check_run_fields(data: dict[str, Any], where: str) -> None:
    """The run-level fields besides results, data and subjects: objects where objects belong, one-line texts, a
    finite non-negative wall time."""
    for key in ("settings", "code", "encoders"):
        if not isinstance(data.get(key, {}), dict):
            raise ResultsFormatError(f"{where}: {key}: expected an object")
    for name, encoder in (data.get("encoders") or {}).items():
        check_text(name, f"{where}: encoders key")
        if not isinstance(encoder, dict):
            raise ResultsFormatError(f"{where}: encoders.{name}: expected an object")
    for key in ("run_id", "created", "comparability_key"):
        if key in data:
            check_text(data[key], f"{where}: {key}")
    wall = data.get("wall_time_s", 0.0)
    if _number(wall, f"{where}: wall_time_s") < 0:
        raise ResultsFormatError(f"{where}: wall_time_s: negative")
