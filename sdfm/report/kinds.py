"""The one table of the report's figure kinds: when each applies, its title, caption and category.

Each data set gets the figures ``<dataset>_<kind>.png`` (and ``.pdf``) of the kinds that apply to
it. Whether a kind applies is decided on *facts* about the data set, a plain dict:

* ``epsilons``: distinct epsilons of OT-FM / SD-FM;
* ``guidance_scales``: distinct classifier-free guidance scales;
* ``potentials``: whether SD-FM potentials were fitted;
* ``kind``: ``"points"``, ``"images"`` or None (unknown);
* ``superres``: whether it is a super-resolution data set.

The workflow (``workflow/rules/report.smk``) computes the facts from the config, to declare the
figures as outputs of the ``report`` rule with their captions (``snakemake --report``);
:func:`sdfm.report.document.write_report` computes them from a finished run's results. Both read
this table, so they draw the same figures. A new figure kind is one row here, its drawing in
:mod:`sdfm.report.figures` (called from :func:`sdfm.report.document.write_report`) and its caption
``workflow/report/<name>.rst``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["FIGURE_KINDS", "FigureKind", "KINDS", "applicable_kinds", "split_figure_name"]


@dataclass(frozen=True)
class FigureKind:
    """One kind of figure: its file suffix ``name``, when it applies, its heading and its report entry."""

    name: str
    title: str  # the heading of its section in report.md
    category: str  # its category in `snakemake --report`
    applies: Callable[[dict], bool]  # on the data set's facts (module docstring)

    @property
    def caption(self) -> str:
        """Its caption file, relative to ``workflow/report/``."""
        return f"{self.name}.rst"


#: In the order of the sections of a data set in report.md.
KINDS = (
    FigureKind("metrics_vs_nfe", "Sample quality vs NFE", "1. Sample quality vs NFE", lambda f: True),
    FigureKind("metrics_vs_epsilon", "Effect of epsilon at fixed NFE", "2. Effect of epsilon",
               lambda f: f["epsilons"] >= 2),
    FigureKind("guidance", "Classifier-free guidance", "6. Classifier-free guidance",
               lambda f: f["guidance_scales"] >= 2),
    FigureKind("trajectories", "ODE trajectories", "3. Trajectories and samples", lambda f: f["kind"] == "points"),
    FigureKind("samples", "Samples", "3. Trajectories and samples", lambda f: f["kind"] == "images"),
    FigureKind("superres", "Super-resolution", "3. Trajectories and samples", lambda f: f["superres"]),
    FigureKind("chi2", "Semidiscrete potential: chi² convergence", "4. Semidiscrete potential",
               lambda f: f["potentials"]),
    FigureKind("cost", "Compute cost", "5. Compute cost", lambda f: True),
)
#: The kinds by name.
FIGURE_KINDS = {k.name: k for k in KINDS}


def applicable_kinds(facts: dict) -> list[str]:
    """The names of the kinds that apply to a data set with these facts, in report order."""
    return [k.name for k in KINDS if k.applies(facts)]


def split_figure_name(name: str) -> tuple[str, str]:
    """``"<dataset>_<kind>"`` -> ``(dataset, kind)`` for a known kind (data set names may hold ``_``)."""
    for kind in sorted(FIGURE_KINDS, key=len, reverse=True):
        if name.endswith("_" + kind) and len(name) > len(kind) + 1:
            return name[: -len(kind) - 1], kind
    raise ValueError(f"figure {name!r} is not <dataset>_<kind> for a kind of {', '.join(FIGURE_KINDS)}")
