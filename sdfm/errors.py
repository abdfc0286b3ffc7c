"""Errors a user can fix, shared by every layer; this module imports nothing from ``sdfm``.

The command line turns them into one line on stderr and a non-zero exit (:func:`sdfm.cli.main`).
Library modules raise them too (a PCA dimension above the data's), so they live here rather than
in :mod:`sdfm.config`: nothing has to import the application layer for its exception.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """An invalid configuration; the message is one line naming the key and the fix."""
