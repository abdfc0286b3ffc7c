"""Checks and coercions for data set options; each failure is a one-line :class:`DataError`."""

from __future__ import annotations

from pathlib import Path

from sdfm.data.dataset import DataError

__all__ = ["as_bool", "as_dir", "as_fraction", "as_int", "as_optional_int"]

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
        raise DataError(f"option {name}={value!r}: give an integer >= {minimum}")
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
    raise DataError(f"option {name}={value!r}: give true or false")


def as_fraction(name: str, value) -> float:
    """Return ``value`` as a float in [0, 1)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0.0 <= number < 1.0:
        raise DataError(f"option {name}={value!r}: give a fraction in [0, 1)")
    return number


def as_dir(name: str, value) -> Path:
    """Return ``value`` as the path of an existing folder."""
    if value is None or str(value) == "":
        raise DataError(f"option {name} is required: give the folder that holds the data files")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: no such folder (option {name}); download the data there or fix the path")
    return path
