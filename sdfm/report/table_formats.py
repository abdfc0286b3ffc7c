"""The paper-style tables of ``sdfm compare`` as an aligned terminal table, Markdown, CSV or LaTeX.

A table is the ``(means, stds)`` pair of :func:`sdfm.report.paper_table`: rows are the variants
(method, epsilon), columns the solver-NFE settings, cells the mean and standard deviation over
seeds. The best mean of each column (lowest, or highest for precision / recall) is marked: a
trailing ``*`` in the terminal, ``**bold**`` in Markdown, ``\\textbf`` in LaTeX, ``best = 1`` in CSV.
"""

from __future__ import annotations

import csv
import io
import math

import pandas as pd

__all__ = ["FORMATS", "CSV_COLUMNS", "format_table", "csv_rows", "write_csv"]

FORMATS = ("text", "markdown", "csv", "latex")
CSV_COLUMNS = ["dataset", "metric", "method", "column", "mean", "std", "best"]


def _cells(means: pd.DataFrame, stds: pd.DataFrame, lower_is_better: bool):
    """``{(row, column): (mean text, std text or "", best?)}``; missing means are left out."""
    best = means.min() if lower_is_better else means.max()
    cells = {}
    for row in means.index:
        for col in means.columns:
            mean, std = means.at[row, col], stds.at[row, col]
            if pd.isna(mean):
                continue
            cells[row, col] = (f"{mean:.4g}", f"{std:.2g}" if pd.notna(std) else "", bool(mean == best[col]))
    return cells


def _aligned(header: list[str], body: list[list[str]], right: bool = True) -> list[list[str]]:
    """Pad every column to its widest cell: the first (row names) to the left, the others to the right."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def pad(row):
        return [cell.ljust(w) if i == 0 or not right else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]

    return [pad(header), *(pad(r) for r in body)]


def _text(means, stds, cells) -> str:
    header = ["method", *(f"{c} " for c in means.columns)]  # over the numbers, not the best-marker column
    body = []
    for row in means.index:
        texts = []
        for col in means.columns:
            mean, std, best = cells.get((row, col), ("–", "", False))
            texts.append(f"{mean}{f' ± {std}' if std else ''}{'*' if best else ' '}")
        body.append([row, *texts])
    lines = ["  ".join(r).rstrip() for r in _aligned(header, body)]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines + ["(* best in its column)"])


def _markdown(means, stds, cells) -> str:
    header = ["method", *means.columns]
    body = []
    for row in means.index:
        texts = []
        for col in means.columns:
            mean, std, best = cells.get((row, col), ("–", "", False))
            text = f"{mean}{f' ± {std}' if std else ''}"
            texts.append(f"**{text}**" if best else text)
        body.append([row, *texts])
    rows = _aligned(header, body)
    widths = [len(c) for c in rows[0]]
    rule = ["-" * w if i == 0 else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    return "\n".join("| " + " | ".join(r) + " |" for r in [rows[0], rule, *rows[1:]])


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex(means, stds, cells) -> str:
    lines = [r"\begin{tabular}{l" + "r" * len(means.columns) + "}", r"\toprule",
             " & ".join(["Method", *(_latex_escape(c) for c in means.columns)]) + r" \\", r"\midrule"]
    for row in means.index:
        texts = []
        for col in means.columns:
            if (row, col) not in cells:
                texts.append("--")
                continue
            mean, std, best = cells[row, col]
            mean = rf"\mathbf{{{mean}}}" if best else mean
            texts.append(f"${mean}" + (rf" \pm {std}" if std else "") + "$")
        lines.append(" & ".join([_latex_escape(row), *texts]) + r" \\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"])


def format_table(means: pd.DataFrame, stds: pd.DataFrame, lower_is_better: bool = True, fmt: str = "text") -> str:
    """One table in ``fmt``: ``text`` (aligned, for a terminal), ``markdown`` (aligned source) or ``latex``
    (booktabs rules, ``mean \\pm std`` in math mode)."""
    cells = _cells(means, stds, lower_is_better)
    render = {"text": _text, "markdown": _markdown, "latex": _latex}.get(fmt)
    if render is None:
        raise ValueError(f"unknown table format {fmt!r}: choose one of text, markdown, latex (csv: csv_rows)")
    return render(means, stds, cells)


def csv_rows(dataset: str, metric: str, means: pd.DataFrame, stds: pd.DataFrame,
             lower_is_better: bool = True) -> list[list]:
    """The table as rows of :data:`CSV_COLUMNS` (one per variant and column with a value)."""
    best = means.min() if lower_is_better else means.max()
    rows = []
    for row in means.index:
        for col in means.columns:
            mean, std = means.at[row, col], stds.at[row, col]
            if pd.isna(mean):
                continue
            rows.append([dataset, metric, row, col, float(mean), "" if pd.isna(std) or math.isnan(std) else float(std),
                         int(mean == best[col])])
    return rows


def write_csv(rows: list[list]) -> str:
    """``rows`` under a header of :data:`CSV_COLUMNS`, as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()
