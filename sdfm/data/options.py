"""Checks and coercions for data set options; each failure is a one-line :class:`DataError`."""

from __future__ import annotations

import os
from pathlib import Path

from sdfm.data.dataset import DataError

__all__ = ["OptionError", "as_bool", "as_dir", "as_fraction", "as_int", "as_optional_int"]

#: The largest count an option may hold (int64, what numpy and torch index with).
MAX_INT = 2**63 - 1


class OptionError(DataError):
    """A bad data set option; ``option`` names it (a config check turns it into the option's config key)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def as_int(name: str, value, *, minimum: int = 0) -> int:
    """Return ``value`` as an int >= ``minimum``; a numeric string (from a CLI) is accepted."""
    if isinstance(value, bool):
        number = None
    elif isinstance(value, str):
        number = int(value) if value.strip().lstrip("+-").isdigit() else None
    else:
        try:
            number = int(value) if int(value) == value else None
        except (TypeError, ValueError):
            number = None
    if number is None or number < minimum:
        raise OptionError(name, f"option {name}={value!r}: give an integer >= {minimum}")
    if number > MAX_INT:
        raise OptionError(name, f"option {name}={value!r}: out of range; give an integer from {minimum} to {MAX_INT}")
    return number


def as_optional_int(name: str, value, *, minimum: int = 1) -> int | None:
    """Like :func:`as_int`, but ``None`` (no cap) passes through."""
    return None if value is None else as_int(name, value, minimum=minimum)


def as_bool(name: str, value) -> bool:
    """Return ``value`` as a bool; the strings true/false, yes/no, on/off, 1/0 are accepted."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise OptionError(name, f"option {name}={value!r}: give true or false")


def as_fraction(name: str, value) -> float:
    """Return ``value`` as a float in [0, 1)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0.0 <= number < 1.0:
        raise OptionError(name, f"option {name}={value!r}: give a fraction in [0, 1)")
    return number


def as_dir(name: str, value) -> Path:
    """Return ``value`` as the path of an existing, readable folder."""
    if value is None or not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise OptionError(name, f"option {name}={value!r}: give the folder that holds the data files")
    path = Path(value).expanduser()
    if path.is_file():
        raise OptionError(name, f"{path}: a file, not a folder (option {name}); give the folder that holds it")
    if not path.is_dir():
        raise OptionError(name, f"{path}: no such folder (option {name}); download the data there or fix the path")
    if not os.access(path, os.R_OK | os.X_OK):
        raise OptionError(name, f"{path}: folder not readable (option {name}); allow reading it (chmod -R u+rX)")
    return path
