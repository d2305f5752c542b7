"""The test slices that ``mrsr evaluate`` and ``mrsr timing`` read: which ones (evenly spaced when
capped) and each normalised as the split says. A module of its own, so that timing does not import
the evaluate command, and a change here reruns exactly the commands that read test slices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mrsr.data.store import load_series, read_index


def select_test_rows(store: Path, split: pd.DataFrame, max_slices: int | None = None) -> pd.DataFrame:
    """Index rows of the test slices to evaluate (evenly spaced when capped), in index order.

    Args:
        store: the slice store.
        split: the split table (``mrsr.data.split.read_split``).
        max_slices: at most this many slices (None or 0: every test slice).
    """
    index = read_index(store)
    test_keys = split.loc[split["split"] == "test", "series_key"]
    rows = index[index["series_key"].isin(test_keys)].sort_values(["series_key", "slice_index"])
    if max_slices:
        rows = rows.iloc[np.linspace(0, len(rows) - 1, min(max_slices, len(rows))).astype(int)]
    return rows


def test_slices(store: Path, split: pd.DataFrame, rows: pd.DataFrame) -> Iterator[tuple[Any, np.ndarray]]:
    """Yield (index row, normalised HR slice) for the given test rows, series by series.

    Args:
        store: the slice store.
        split: the split table, whose ``norm`` column normalises each series.
        rows: rows of :func:`select_test_rows`.
    """
    norms = split.set_index("series_key")["norm"]
    for key, group in rows.groupby("series_key", sort=True):
        volume = load_series(store, key)
        norm = np.float32(norms.loc[key])
        for row in group.itertuples():
            yield row, np.asarray(volume[row.slice_index], dtype=np.float32) / norm
