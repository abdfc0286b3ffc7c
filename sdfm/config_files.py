"""Validating the config files of a run, each error located at its file, line and column.

``sdfm validate-config FILE`` and the Snakefile both come here: every file is read strictly
(:mod:`sdfm.config_yaml`: YAML syntax and duplicate keys), the merged config is validated
(:func:`sdfm.config.validate_config`), and an error about a key is prefixed with
``FILE:LINE:COLUMN`` of that key in the last file that sets it.
"""

from __future__ import annotations

from pathlib import Path

from sdfm.config import DEFAULT_SCHEMA, validate_config
from sdfm.config_yaml import ConfigFile, read_config_file
from sdfm.errors import ConfigError

__all__ = ["validate_config_file", "validate_config_files"]


def validate_config_files(config: dict, files: list[str | Path], schema_path: str | Path = DEFAULT_SCHEMA) -> dict:
    """Validate ``config``, merged from ``files`` (and maybe ``--config`` overrides); return it with defaults.

    Raises:
        ConfigError: one line starting with the file (and the key's line and column) at fault.
    """
    read = [read_config_file(path) for path in files]
    try:
        return validate_config(config, schema_path)
    except ConfigError as error:
        raise _locate(error, read) from None


def validate_config_file(path: str | Path, schema_path: str | Path = DEFAULT_SCHEMA) -> dict:
    """Read and validate one config file (``sdfm validate-config``)."""
    read = read_config_file(path)
    try:
        return validate_config(read.data, schema_path)
    except ConfigError as error:
        raise read.locate(error) from None


def _locate(error: ConfigError, read: list[ConfigFile]) -> ConfigError:
    """Locate ``error`` in the last file that sets its key (the files merge in order), else in the last file."""
    if not read:
        return error
    for config_file in reversed(read):
        located = config_file.locate(error)
        if not str(located).startswith(f"{config_file.path}: "):
            return located
    return read[-1].locate(error)
