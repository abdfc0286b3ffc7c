"""Job ``aggregate``: concatenate the per-run tables into ``results/metrics.csv``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sdfm.io import atomic_path
from sdfm.jobs.evaluate import METRIC_COLUMNS

__all__ = ["aggregate_metrics"]


def aggregate_metrics(inputs: list[str | Path], out: str | Path) -> pd.DataFrame:
    """Read each evaluation CSV, check its columns, and write one sorted tidy table."""
    frames = []
    for path in inputs:
        frame = pd.read_csv(path)
        missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}: re-run its evaluate job")
        frames.append(frame[METRIC_COLUMNS])
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=METRIC_COLUMNS)
    table = table.sort_values(METRIC_COLUMNS[:-1]).reset_index(drop=True)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return table
