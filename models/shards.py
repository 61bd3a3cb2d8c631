"""Example shards: the rows a build makes, as columnar numpy files on disk.

A shard is a directory of ``.npy`` files, one per column (:data:`COLUMNS`), all with the same
number of rows. It is written whole to a temporary name and renamed into place, so a reader
never sees half a shard.

Why ``.npy`` columns rather than Parquet: only this code reads them; numpy is already a
dependency (pyarrow would add ~40 MB for nothing we use); and a column file memory-maps
(``np.load(mmap_mode="r")``), so a reader that wants the rows of one time window touches only
their pages, and an out-of-core fit can hand XGBoost one shard at a time. No pickles: text
columns are fixed-width unicode arrays, always loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Row kinds: a sampled scoring moment (the worker's examples), or a snapshot row (one served
# business of a market at a snapshot time T, ``models.snapshots``).
EVENT, SNAPSHOT = 0, 1

# name -> dtype (X is 2-D: rows x features). ``time`` is where the label window starts (as_of for an
# event row, T for a snapshot row); ``u`` is the event id's sampling hash (``models.dataset.sampled``).
COLUMNS: dict[str, str] = {
    "X": "float32",
    "kind": "int8",
    "time": "int64",
    "as_of": "int64",
    "y": "float32",
    "business": "U",
    "market": "U",
    "popularity": "float64",
    "recent": "float64",
    "partition": "int32",
    "offset": "int64",
    "u": "uint32",
}


@dataclass
class Rows:
    """Column arrays of some rows (a shard, a selection of shards, or the empty set)."""

    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.cols["kind"].shape[0])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def take(self, idx: np.ndarray) -> Rows:
        return Rows({k: np.asarray(v[idx]) for k, v in self.cols.items()})

    @staticmethod
    def empty(n_features: int) -> Rows:
        cols = {k: np.zeros(0, dtype=("<U1" if d == "U" else d)) for k, d in COLUMNS.items() if k != "X"}
        cols["X"] = np.zeros((0, n_features), dtype=np.float32)
        return Rows(cols)

    @staticmethod
    def concat(parts: list[Rows], n_features: int) -> Rows:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Rows.empty(n_features)
        return Rows({k: np.concatenate([p.cols[k] for p in parts]) for k in COLUMNS})


class RowBuffer:
    """Rows collected in memory until written: whole column chunks (``add_rows``), or one at a time
    (``add``: Python lists per column, a growing float32 block)."""

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features
        self._X = np.empty((256, n_features), dtype=np.float32)
        self._cols: dict[str, list] = {k: [] for k in COLUMNS if k != "X"}
        self._chunks: list[Rows] = []  # rows added whole (add_rows), and sealed ones
        self._n_chunked = 0

    def __len__(self) -> int:
        return self._n_chunked + len(self._cols["kind"])

    def add(self, x: np.ndarray, **values: object) -> None:
        n = len(self._cols["kind"])
        if n == self._X.shape[0]:
            grown = np.empty((n * 2, self.n_features), dtype=np.float32)
            grown[:n] = self._X
            self._X = grown
        self._X[n] = x
        for k, col in self._cols.items():
            col.append(values[k])

    def add_rows(self, rows: Rows) -> None:
        """Append ``rows`` whole (after any added one by one)."""
        self._seal()
        self._chunks.append(rows)
        self._n_chunked += len(rows)

    def _seal(self) -> None:
        """Rows added one by one become a chunk, so chunks keep the order rows came in."""
        n = len(self._cols["kind"])
        if n:
            cols = {k: _array(k, v) for k, v in self._cols.items()}
            cols["X"] = self._X[:n].copy()
            self._chunks.append(Rows(cols))
            for col in self._cols.values():
                col.clear()
            self._n_chunked += n

    def rows(self) -> Rows:
        self._seal()
        return Rows.concat(self._chunks, self.n_features)

    def clear(self) -> None:
        for col in self._cols.values():
            col.clear()
        self._chunks, self._n_chunked = [], 0


def _array(name: str, values: list) -> np.ndarray:
    d = COLUMNS[name]
    if d == "U":
        return np.array(values, dtype=str) if values else np.zeros(0, dtype="<U1")
    return np.array(values, dtype=d)


def write_shard(path: Path, rows: Rows, durable: bool = True) -> None:
    """Write ``rows`` to the shard directory ``path`` atomically (replacing one already there).

    ``durable=False`` skips the fsyncs: for a build in a temporary directory that no later run
    resumes, where they were a third of a small build's time."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for k in COLUMNS:
        np.save(tmp / f"{k}.npy", rows.cols[k], allow_pickle=False)
    if durable:
        _fsync_dir(tmp)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def read_shard(path: Path, select: Callable[[Rows], np.ndarray] | None = None) -> Rows:
    """The shard at ``path`` (the rows ``select(shard)`` picks, a boolean mask or indices, when given).

    ``select`` sees the shard memory-mapped: reading its small columns to decide costs no X pages.
    """
    cols = {k: np.load(path / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in COLUMNS}
    mapped = Rows(cols)
    if select is None:
        return mapped.take(np.arange(len(mapped)))
    return mapped.take(np.asarray(select(mapped)))


def shard_rows(path: Path) -> int:
    return int(np.load(path / "kind.npy", mmap_mode="r", allow_pickle=False).shape[0])


def read_shards(paths: Iterable[Path], n_features: int, select: Callable[[Rows], np.ndarray] | None = None) -> Rows:
    return Rows.concat([read_shard(p, select) for p in paths], n_features)


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
