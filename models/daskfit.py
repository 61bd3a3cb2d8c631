"""The Dask fit engine: :func:`models.train.fit` on a ``distributed`` cluster through ``xgboost.dask``.

**Why Dask.** It is pure Python and pip-installable (the ``distributed`` extra), ``xgboost.dask``
is maintained in-tree by XGBoost, a ``LocalCluster`` runs in CI with no JVM, and a user points the
same code at a real cluster by its scheduler address (:func:`connect`). Spark would need a JVM
cluster and our numpy rows moved into DataFrames. Only this module imports dask; the default
in-process fit never does.

**Same algorithm.** :class:`DaskData` is a :class:`~models.fitdata.FitData`: ``fit`` runs its one
protocol - inner split, rounds by checkpoints (each checkpoint continues the booster with
``xgboost.dask.train(xgb_model=...)``), objective choice, refit - with the rows living on the
workers. The driver keeps each row's label, group, time and source (the inner split and criterion
need them), never the features.

**Partitions.** Chunks are loaded on the workers, then re-partitioned by *ranges of group ids*
(:func:`models.fitdata.group_ranges`): partition ``p`` holds whole groups, rows in (group, row)
order, and the ranges ascend with ``p``. A partition lives on one worker, so a ranking group never
spans two workers (checked on the workers' data: :meth:`DaskData.partition_groups` and
:func:`models.fitdata.check_whole_groups`, :class:`~models.errors.SplitGroupError`). Ranges rather
than a hash of the group id: a worker concatenates its partitions in order, so its rows stay
sorted by qid and ``xgboost.dask`` need not re-sort them (it would, with an unstable sort and a
warning about the memory it costs).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from distributed import Client, default_client, wait

from models.errors import TrainingError
from models.fitdata import DASK, ChunkLoader, check_whole_groups, chunks_of, fit_order, group_ranges

if TYPE_CHECKING:
    from models.baseline import PopularityMargin
    from models.train import FitSet


def connect(address: str | None = None, **local: Any) -> Client:
    """A client of the scheduler at ``address`` (``tcp://host:8786``), or of a new ``LocalCluster``
    (``local``: its keyword arguments, e.g. ``n_workers=2, threads_per_worker=1``)."""
    if address:
        return Client(address)
    from distributed import LocalCluster

    return Client(LocalCluster(**{"dashboard_address": None, **local}))


class DaskEngine:
    """Opens the rows of a fit on ``client`` (the default client when None) as :class:`DaskData`,
    in ``partitions`` partitions (default: two per worker)."""

    def __init__(self, client: Client | None = None, partitions: int | None = None):
        self.client, self.partitions = client, partitions

    def open(self, examples: FitSet | Sequence[ChunkLoader], options: Any) -> DaskData:
        client = self.client or default_client()
        workers = max(1, len(client.scheduler_info()["workers"]))
        parts = self.partitions or 2 * workers
        if not isinstance(examples, Sequence):
            # copies: each loader then carries its own rows to a worker process, not the whole set
            examples = chunks_of(examples, math.ceil(len(examples) / parts) or 1, copy=True)
        return DaskData(client, examples, parts)


class DaskData:
    """The rows on the workers, partitioned by group ranges (see the module doc)."""

    engine = DASK

    def __init__(self, client: Client, chunks: Sequence[ChunkLoader], partitions: int):
        if not chunks:
            raise TrainingError("dask fit: no chunks")
        self.client = client
        loaded = [client.submit(_load, load, i) for i, load in enumerate(chunks)]
        self.rows, offsets = _gather_rows(client, loaded)
        self.n_features = int(client.submit(_width, loaded[0]).result())
        self.part_ids = _plan(self.rows.groups, partitions)
        self.parts = [client.submit(_assemble, loaded, offsets, ids, pure=False) for ids in self.part_ids]
        wait(self.parts)
        del loaded  # the chunks' futures: released, the partitions hold the rows now
        check_whole_groups(self.partition_groups())

    def partition_groups(self) -> list[np.ndarray]:
        """The group ids of each partition, read from the workers' data."""
        return self.client.gather([self.client.submit(_groups_of, p) for p in self.parts])

    def partition_workers(self) -> list[set[str]]:
        """The worker(s) holding each partition."""
        who = self.client.who_has(self.parts)
        return [set(who[p.key]) for p in self.parts]

    def _selected(self, idx: np.ndarray | None) -> list[tuple[Any, np.ndarray, np.ndarray]]:
        """Per partition holding rows of ``idx``, in partition order: (its future, the mask of its
        selected rows, its row ids)."""
        keep = np.ones(len(self.rows), bool) if idx is None else np.isin(np.arange(len(self.rows)), idx)
        out = []
        for p, ids in zip(self.parts, self.part_ids, strict=True):
            mask = keep[ids]
            if mask.any():
                out.append((p, mask, ids))
        return out

    def _arrays(
        self, idx: np.ndarray | None, objective: str, margin: PopularityMargin | None, meta: bool
    ) -> dict[str, Any]:
        """Dask arrays (one chunk per selected partition) of the selection's features, and with
        ``meta`` its labels, qid (ranking) and base margin."""
        import dask.array as da

        names = ["data"] + (["label", "qid", "base_margin"] if meta else [])
        cols: dict[str, list[Any]] = {n: [] for n in names}
        for part, mask, _ in self._selected(idx):
            n = int(mask.sum())
            fut = self.client.submit(_select, part, mask, objective, margin, meta, pure=False)
            for i, name in enumerate(names):
                shape = (n, self.n_features) if name == "data" else (n,)
                dtype = np.int64 if name == "qid" else np.float32
                cols[name].append(da.from_delayed(self.client.submit(operator.getitem, fut, i), shape, dtype=dtype))
        if not cols["data"]:
            raise TrainingError("dask fit: the selection has no rows")
        out = {n: da.concatenate(c) for n, c in cols.items()}
        if meta and not objective.startswith("rank:"):
            del out["qid"]
        if meta and margin is None:
            del out["base_margin"]
        return out

    def matrix(self, idx: np.ndarray | None, params: dict[str, Any], margin: PopularityMargin | None) -> Any:
        from xgboost import dask as dxgb

        arrays = self._arrays(idx, params["objective"], margin, meta=True)
        return dxgb.DaskQuantileDMatrix(self.client, missing=np.nan, max_bin=params["max_bin"], **arrays)

    def train(self, params: dict[str, Any], dtrain: Any, rounds: int, booster: Any = None) -> Any:
        from xgboost import dask as dxgb

        out = dxgb.train(self.client, params, dtrain, num_boost_round=rounds, xgb_model=booster, verbose_eval=False)
        return out["booster"]

    def scorer(self, idx: np.ndarray, objective: str, margin: PopularityMargin | None) -> _DaskScorer:
        return _DaskScorer(self, np.asarray(idx), margin)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": DASK,
            "workers": len(self.client.scheduler_info()["workers"]),
            "partitions": len(self.parts),
            "partition_rows": [len(ids) for ids in self.part_ids],
        }

    def close(self) -> None:
        self.parts = []  # dropping the futures releases the partitions (cancel races the scheduler)


class _DaskScorer:
    """Margins of the inner validation rows, predicted on the workers, returned in ``idx`` order."""

    def __init__(self, data: DaskData, idx: np.ndarray, margin: PopularityMargin | None):
        self._client = data.client
        self._X = data._arrays(idx, "", None, meta=False)["data"].persist()
        order = np.concatenate([ids[mask] for _, mask, ids in data._selected(idx)])
        self._pos = _positions(order, idx)  # where each scored row sits in idx
        if margin is not None:
            self.base = np.asarray(self._X.map_blocks(margin.values, drop_axis=1, dtype=np.float64).compute())[
                self._pos
            ]
        else:
            self.base = np.zeros(len(idx))

    def margins(self, booster: Any) -> np.ndarray:
        from xgboost import dask as dxgb

        pred = dxgb.inplace_predict(self._client, booster, self._X, predict_type="margin", missing=np.nan)
        return np.asarray(pred.compute())[self._pos]


def _positions(order: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``pos`` with ``order[pos] == idx`` (both hold the same row ids)."""
    srt = np.argsort(order, kind="stable")
    return srt[np.searchsorted(order[srt], idx)]


def _plan(groups: np.ndarray, partitions: int) -> list[np.ndarray]:
    """Row ids per partition: ranges of whole groups, rows in (group, row) order."""
    ordered = fit_order(groups, np.arange(len(groups)), "rank:")
    edges = group_ranges(groups, math.ceil(len(groups) / max(1, partitions)))
    bounds = np.searchsorted(groups[ordered], edges, side="left")
    return [ids for ids in np.split(ordered, bounds) if len(ids)]


def _gather_rows(client: Client, loaded: list[Any]) -> tuple[FitSet, np.ndarray]:
    """The chunks' labels, groups, times and sources on the driver, and the chunks' row offsets."""
    from models.train import FitSet

    metas = client.gather([client.submit(_meta, f) for f in loaded])
    y, g, t, s = (np.concatenate(col) for col in zip(*metas, strict=True))
    offsets = np.concatenate([[0], np.cumsum([len(m[0]) for m in metas])]).astype(np.int64)
    rows = FitSet(np.zeros((len(y), 0), np.float32), y.astype(np.float32), g.astype(np.int64), t.astype(np.int64), s)
    return rows, offsets


# ------------------------------------------------------------------ run on the workers
def _load(load: ChunkLoader, i: int) -> FitSet:
    try:
        return load()
    except Exception as exc:
        raise TrainingError(f"dask fit: chunk {i} did not load: {exc}") from exc


def _meta(part: FitSet) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return part.y, part.groups, part.time, part.source


def _width(part: FitSet) -> int:
    return int(np.asarray(part.X).shape[1])


def _assemble(chunks: list[FitSet], offsets: np.ndarray, ids: np.ndarray) -> FitSet:
    """Partition rows ``ids`` (global row numbers, in order) gathered from the loaded chunks."""
    from models.train import FitSet

    c = np.searchsorted(offsets, ids, side="right") - 1
    cols = {}
    for col in ("X", "y", "groups", "time", "source"):
        parts = [np.asarray(getattr(chunks[k], col)) for k in range(len(chunks))]
        first = parts[0]
        out = np.empty((len(ids), *first.shape[1:]), dtype=first.dtype)
        for k in np.unique(c).tolist():
            sel = c == k
            out[sel] = parts[k][ids[sel] - offsets[k]]
        cols[col] = out
    cols["X"] = cols["X"].astype(np.float32, copy=False)
    return FitSet(**cols)


def _groups_of(part: FitSet) -> np.ndarray:
    return np.asarray(part.groups)


def _select(part: FitSet, mask: np.ndarray, objective: str, margin: PopularityMargin | None, meta: bool) -> tuple:
    from models.train import training_labels

    X = part.X[mask]
    if not meta:
        return (X,)
    y = training_labels(part.y[mask], objective or "binary:logistic")
    bm = margin.values(X).astype(np.float32) if margin is not None else np.zeros(len(X), np.float32)
    return X, y, part.groups[mask], bm
