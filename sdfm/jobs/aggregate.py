"""Job ``aggregate``: concatenate the per-run tables into ``results/metrics.csv``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sdfm.artifacts import METRIC_COLUMNS, read_metrics
from sdfm.io import atomic_path

__all__ = ["aggregate_metrics"]


def aggregate_metrics(inputs: list[str | Path], out: str | Path) -> pd.DataFrame:
    """Read each evaluation CSV, check its columns, and write one sorted tidy table.

    A run's CSV written before the ``epsilon_label`` column gets it from ``epsilon`` (:func:`sdfm.artifacts.read_metrics`).
    """
    frames = []
    for path in inputs:
        frame = read_metrics(path)
        missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}: re-run its evaluate job")
        frames.append(frame[METRIC_COLUMNS])
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=METRIC_COLUMNS)
    table = table.sort_values(METRIC_COLUMNS[:-1]).reset_index(drop=True)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return table
