"""Value checks of a workflow config that a JSON schema cannot make, each a one-line :class:`ConfigError`.

- Counts are integers. JSON Schema calls 256.0 an integer, and PyYAML reads ``1e30``-style
  floats; an integral float is converted to an int (256.0 -> 256) when it is exact (at most
  2^53), else refused with the key's range.
- Numbers are finite: ``.nan`` and ``.inf`` pass every ``minimum``.
- Seeds are distinct (a repeated seed would be counted twice in mean +- std).
- ``1e-4``: PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so ``1e-4``
  is the string "1e-4"; the error says so and what to write (``1.0e-4``).
- ``key:value`` without a space is one string in YAML; the error says to add the space.
- Every data set's options go through its builder's own checks (:func:`sdfm.data.check_options`)
  before any job starts: option types and ranges, the data folder's kind and readability.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import jsonschema

from sdfm.data.dataset import DataError
from sdfm.data.options import OptionError
from sdfm.data.registry import DATASETS, check_options
from sdfm.errors import ConfigError

__all__ = ["check_data_options", "check_finite", "check_output_dirs", "check_readable_file", "check_unique_seeds",
           "integral_floats_to_int", "strict_integer_validator", "type_hint"]

#: The largest integer a float holds exactly; integral floats above it are refused.
EXACT_FLOAT_INT = 2**53
#: A float PyYAML (YAML 1.1) reads as a string: no dot in the mantissa or no sign in the exponent.
_YAML11_FLOAT_STRING = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_GLUED = re.compile(r"^[A-Za-z_]\w*:\S")


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _set(config: dict, path, value) -> None:
    target = config
    for part in list(path)[:-1]:
        target = target[part]
    target[list(path)[-1]] = value


def _wants_integer(error: jsonschema.ValidationError) -> bool:
    expected = error.validator_value
    return error.validator == "type" and ("integer" in expected if isinstance(expected, list) else expected == "integer")


def integral_floats_to_int(config: dict, validator: jsonschema.protocols.Validator) -> None:
    """Convert, in place, integral floats where the schema wants an integer; refuse the inexact ones.

    ``validator`` must count only ints as integers (see :func:`strict_integer_validator`).

    Raises:
        ConfigError: a non-integral, non-finite or inexact (above 2^53) float where a count is wanted.
    """
    for error in list(validator.iter_errors(config)):
        value = error.instance
        if not _wants_integer(error) or isinstance(value, bool) or not isinstance(value, float):
            continue
        key, minimum = _key(error.absolute_path), error.schema.get("minimum", 0)
        if math.isfinite(value) and value.is_integer() and abs(value) <= EXACT_FLOAT_INT:
            _set(config, error.absolute_path, int(value))
        elif math.isfinite(value) and value.is_integer():
            raise ConfigError(f"config key '{key}': {value:g} is out of range for a count; write an integer from "
                              f"{minimum} to {EXACT_FLOAT_INT}")
        else:
            raise ConfigError(f"config key '{key}': {value!r} is not an integer; write a whole number >= {minimum}")


def strict_integer_validator(schema: dict) -> jsonschema.protocols.Validator:
    """A Draft 2020-12 validator for which 256.0 is a number but not an integer."""
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def check_finite(value, path=()) -> None:
    """Refuse NaN and infinity anywhere in ``value`` (a config or a part of it).

    Raises:
        ConfigError: naming the key of the first non-finite number.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_finite(item, (*path, index))
    elif isinstance(value, float) and not math.isfinite(value):
        written = ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
        raise ConfigError(f"config key '{_key(path)}': {written} is not a finite number; write a finite number")


def check_unique_seeds(seeds: list, key: str) -> None:
    """Each seed once: a repeated seed would count one run twice in mean +- std."""
    seen = set()
    for seed in seeds:
        if seed in seen:
            raise ConfigError(f"config key '{key}': seed {seed} is listed twice, and each seed is one run of the "
                              f"mean +- std; drop the copy")
        seen.add(seed)


def type_hint(value) -> str:
    """Why a string stands where a number or a mapping was wanted, when YAML's rules explain it ('' if not)."""
    if not isinstance(value, str):
        return ""
    text = value.strip()
    if _YAML11_FLOAT_STRING.match(text):
        mantissa, _, exponent = text.lower().partition("e")
        mantissa = mantissa if "." in mantissa else f"{mantissa}.0"
        exponent = exponent if exponent[:1] in "+-" else f"+{exponent}"
        return (f"PyYAML reads {text} as a string (YAML 1.1 floats need a dot and a signed exponent); "
                f"write {mantissa}e{exponent}")
    if _GLUED.match(text):
        name, _, rest = text.partition(":")
        return f"'{text}' is one string: YAML needs a space after the ':'; write '{name}: {rest}'"
    return ""


def check_data_options(where: str, source: str, options: dict) -> dict:
    """Run data set ``source``'s own option checks on ``options`` (``where``: its config key) before any job.

    Returns:
        The options with their values as the builder will use them.

    Raises:
        ConfigError: an unknown source, an unknown or missing option, or a value the builder refuses.
    """
    if source not in DATASETS:
        raise ConfigError(f"config key '{where}.source': unknown data set {source!r}; choose one of "
                          f"{', '.join(sorted(DATASETS))}")
    try:
        return check_options(source, options)
    except OptionError as error:
        raise ConfigError(f"config key '{where}.options.{error.option}': {error}") from None
    except DataError as error:
        raise ConfigError(f"config key '{where}.options': {error}") from None


def check_readable_file(key: str, value, fix: str) -> None:
    """``value`` is the path of a readable file (not a folder); else a one-line error naming ``key`` and ``fix``."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise ConfigError(f"config key '{key}': {value} is a folder, not a file; {fix}")
    if not path.is_file():
        raise ConfigError(f"config key '{key}': {value} does not exist; {fix}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"config key '{key}': {value} is not readable; allow reading it (chmod u+r {value})")


def check_output_dirs(config: dict) -> None:
    """``results_dir`` and ``reports_dir`` are folders, or do not exist yet (the workflow makes them)."""
    for key in ("results_dir", "reports_dir"):
        path = Path(config[key]).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"config key '{key}': {config[key]} is a file, and results go into a folder; "
                              f"give another path or move the file")
