"""Where the fit's rows live: in memory, in external memory (one machine), or on a Dask cluster.

:func:`models.train.fit` runs one protocol - inner split, rounds by checkpoints, objective choice,
refit - against a :class:`FitData`, which holds the rows and knows how to turn a selection of them
into an XGBoost training matrix, train on it and score a selection. Every engine keeps the rows'
labels, groups, times and sources on the driver (``FitData.rows``, a :class:`~models.train.FitSet`
whose ``X`` may have no columns: about 25 bytes a row), because the inner split and the criterion
need them; only the features ``X`` (``features x 4`` bytes a row) are engine-specific.

Engines (``FitResult.engine`` records which one ran):

* ``"memory"`` (:class:`MemoryData`): ``xgb.DMatrix`` from numpy, exactly the fit as it always was.
* ``"external_memory"`` (:class:`ExternalMemoryData`): ``xgb.ExtMemQuantileDMatrix`` over an
  ``xgb.DataIter`` whose batches are gathered from the chunks spilled to ``.npy`` files; the
  quantized pages are cached on disk, so the resident set is about one batch plus the labels.
* ``"dask"`` (``models.daskfit.DaskData``): ``xgboost.dask`` on a ``distributed.Client``.

**Ranking groups.** ``rank:*`` objectives need a query's rows together and XGBoost does not check
it across batches: a group cut in two becomes two queries silently (measured on XGBoost 3.2:
``ExtMemQuantileDMatrix`` accepts it and reports more groups than there are). So rows are
re-chunked by group key: :func:`group_ranges` cuts the sorted group ids into ranges of whole groups
(about ``batch_rows`` rows each), each batch holds one range with its rows in (group, row) order -
the order :func:`models.train.dmatrix` sorts into - and :func:`check_whole_groups` refuses
(:class:`~models.errors.SplitGroupError`) batches or partitions that overlap or are unsorted.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from models.errors import SplitGroupError, TrainingError

if TYPE_CHECKING:
    from models.baseline import PopularityMargin
    from models.train import FitSet

ChunkLoader = Callable[[], "FitSet"]  # one shard of examples, loaded on demand
MEMORY, EXTERNAL_MEMORY, DASK = "memory", "external_memory", "dask"
ENGINES = (MEMORY, EXTERNAL_MEMORY, DASK)
DEFAULT_BATCH_BYTES = 64 * 2**20  # features of one external-memory batch
MIN_BATCH_BYTES = 2**20


class Scorer(Protocol):
    """Margin scores of a fixed selection of rows (the inner validation), in that selection's order."""

    base: np.ndarray  # the base margin of each row (zeros without one)

    def margins(self, booster: Any) -> np.ndarray: ...


class FitData(Protocol):
    """The training rows as an engine holds them (see the module doc)."""

    engine: str
    rows: FitSet  # y, groups, time, source of every row (X may have no columns)

    def matrix(self, idx: np.ndarray | None, params: dict[str, Any], margin: PopularityMargin | None) -> Any: ...

    def train(self, params: dict[str, Any], dtrain: Any, rounds: int, booster: Any = None) -> Any: ...

    def scorer(self, idx: np.ndarray, objective: str, margin: PopularityMargin | None) -> Scorer: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Engine(Protocol):
    """Opens the rows of a fit (a FitSet, or chunk loaders) as this engine's :class:`FitData`."""

    def open(self, examples: FitSet | Sequence[ChunkLoader], options: Any) -> FitData: ...


def feature_bytes(rows: int, features: int) -> int:
    """The estimate the engines are chosen by: float32 features, ``rows x features x 4`` bytes."""
    return int(rows) * int(features) * 4


def fit_order(groups: np.ndarray, idx: np.ndarray, objective: str) -> np.ndarray:
    """``idx`` in the row order the fit uses: by group, then row, for ``rank:*`` (what XGBoost
    requires of qid); as given otherwise. The same order :func:`models.train.dmatrix` sorts into."""
    if not objective.startswith("rank:"):
        return idx
    return idx[np.argsort(groups[idx], kind="stable")]


# --------------------------------------------------------------------------------- groups
def group_ranges(groups: np.ndarray, batch_rows: int) -> np.ndarray:
    """Edges on the group ids that cut them into ranges of whole groups of about ``batch_rows``
    rows (a larger group stands alone). Row ``i``'s range: ``searchsorted(edges, groups[i], "right")``."""
    ids, counts = np.unique(np.asarray(groups), return_counts=True)
    edges, filled = [], 0
    for gid, n in zip(ids.tolist(), counts.tolist(), strict=True):
        if filled and filled + n > batch_rows:
            edges.append(gid)
            filled = 0
        filled += n
    return np.asarray(edges, dtype=np.asarray(groups).dtype)


def split_by_range(ordered: np.ndarray, groups: np.ndarray, edges: np.ndarray) -> list[np.ndarray]:
    """``ordered`` (row ids in fit order) cut at the range edges: one id array per non-empty range."""
    bounds = np.searchsorted(groups[ordered], edges, side="left")
    return [part for part in np.split(ordered, bounds) if len(part)]


def check_whole_groups(parts: Sequence[np.ndarray], ordered: bool = True) -> None:
    """Refuse parts (batches, partitions: their group ids) that share a group, or - with
    ``ordered`` - whose groups are not sorted within and across parts. :class:`SplitGroupError`."""
    seen: dict[int, int] = {}
    last = None
    for i, g in enumerate(parts):
        g = np.asarray(g)
        if not len(g):
            continue
        if ordered and np.any(np.diff(g) < 0):
            raise SplitGroupError(f"part {i}: group ids out of order within it (a ranking group must be contiguous)")
        if ordered and last is not None and g[0] <= last:
            raise SplitGroupError(
                f"part {i} starts with group {g[0]} after group {last}: a group cut or parts out of order"
            )
        for gid in np.unique(g).tolist():
            if seen.setdefault(gid, i) != i:
                raise SplitGroupError(f"group {gid} is in parts {seen[gid]} and {i}: it would count as two queries")
        last = g[-1]


# --------------------------------------------------------------------------------- memory
def xgb_train(params: dict[str, Any], dtrain: Any, rounds: int, booster: Any = None) -> Any:
    """``rounds`` more trees on ``dtrain`` (continuing ``booster``): the one-process engines' step."""
    import xgboost as xgb

    return xgb.train(params, dtrain, num_boost_round=rounds, xgb_model=booster, verbose_eval=False)


class MemoryData:
    """The in-memory engine: ``xgb.DMatrix`` from the numpy arrays, the fit's original path."""

    engine = MEMORY

    def __init__(self, examples: FitSet):
        self.rows = examples

    def matrix(self, idx: np.ndarray | None, params: dict[str, Any], margin: PopularityMargin | None) -> Any:
        from models.train import dmatrix

        ex = self.rows if idx is None else self.rows.take(idx)
        return dmatrix(ex, params["objective"], margin)

    def train(self, params: dict[str, Any], dtrain: Any, rounds: int, booster: Any = None) -> Any:
        return xgb_train(params, dtrain, rounds, booster)

    def scorer(self, idx: np.ndarray, objective: str, margin: PopularityMargin | None) -> Scorer:
        return _MemoryScorer(self.rows.take(idx), objective, margin)

    def describe(self) -> dict[str, Any]:
        return {"engine": MEMORY}

    def close(self) -> None:
        pass


class _MemoryScorer:
    def __init__(self, va: FitSet, objective: str, margin: PopularityMargin | None):
        from models.train import dmatrix

        self._dva = dmatrix(va, objective)  # already in fit order; its margin is self.base
        self.base = margin.values(va.X) if margin is not None else np.zeros(len(va))

    def margins(self, booster: Any) -> np.ndarray:
        return booster.predict(self._dva, output_margin=True)


# ------------------------------------------------------------------------ external memory
class ExternalMemoryData:
    """Chunks spilled to ``.npy`` files, read back in batches (see the module doc).

    ``chunks`` are called once each, in order (their rows in that order are the training rows,
    group ids shared across chunks); the features are written to ``workdir`` (a temporary directory
    by default, removed by :meth:`close`) and memory-mapped. ``batch_bytes`` bounds the features of
    one batch handed to XGBoost."""

    engine = EXTERNAL_MEMORY

    def __init__(
        self, chunks: Sequence[ChunkLoader], workdir: str | Path | None = None, batch_bytes: int = DEFAULT_BATCH_BYTES
    ):
        if not chunks:
            raise TrainingError("external memory fit: no chunks")
        self._tmp = tempfile.TemporaryDirectory(prefix="streamrank-extmem-", dir=workdir)
        self.dir = Path(self._tmp.name)
        self.rows, self._files, self.offsets = _spill(chunks, self.dir)
        self.n_features = int(self._files[0].shape[1])
        self.batch_rows = max(1, batch_bytes // max(1, feature_bytes(1, self.n_features)))
        self.matrices = 0  # ExtMemQuantileDMatrix built (recorded: proves the engine ran)
        self.batches_fed = 0

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """The feature rows ``ids`` (global row numbers), in that order."""
        out = np.empty((len(ids), self.n_features), dtype=np.float32)
        srt = np.argsort(ids, kind="stable")
        s = ids[srt]
        chunk = np.searchsorted(self.offsets, s, side="right") - 1
        bounds = np.flatnonzero(np.diff(chunk)) + 1
        pieces = [
            self._files[c[0]][p - self.offsets[c[0]]]
            for p, c in zip(np.split(s, bounds), np.split(chunk, bounds), strict=True)
            if len(p)
        ]
        if pieces:
            out[srt] = np.concatenate(pieces)
        return out

    def batches(self, idx: np.ndarray | None, objective: str) -> list[np.ndarray]:
        """Row ids per batch, in fit order; whole groups per batch for ``rank:*``."""
        ids = np.arange(len(self.rows)) if idx is None else np.asarray(idx)
        ordered = fit_order(self.rows.groups, ids, objective)
        if objective.startswith("rank:"):
            return split_by_range(ordered, self.rows.groups, group_ranges(self.rows.groups[ordered], self.batch_rows))
        return [ordered[i : i + self.batch_rows] for i in range(0, len(ordered), self.batch_rows)]

    def arrays(
        self, idx: np.ndarray | None, objective: str, margin: PopularityMargin | None
    ) -> Iterator[dict[str, np.ndarray]]:
        """The batches as XGBoost gets them: ``data``, ``label``, ``qid`` (ranking), ``base_margin``."""
        from models.train import training_labels

        for ids in self.batches(idx, objective):
            X = self.gather(ids)
            kw = {"data": X, "label": training_labels(self.rows.y[ids], objective)}
            if objective.startswith("rank:"):
                kw["qid"] = self.rows.groups[ids]
            if margin is not None:
                kw["base_margin"] = margin.values(X).astype(np.float32)
            yield kw

    def matrix(self, idx: np.ndarray | None, params: dict[str, Any], margin: PopularityMargin | None) -> Any:
        import xgboost as xgb

        objective = params["objective"]
        it = _batch_iter(self, idx, objective, margin, str(self.dir / f"cache-{self.matrices}"))
        self.matrices += 1
        try:
            return xgb.ExtMemQuantileDMatrix(it, missing=np.nan, nthread=params["nthread"], max_bin=params["max_bin"])
        except SplitGroupError:
            raise
        except Exception as exc:  # XGBoost re-raises the iterator's error, or its own
            if isinstance(exc.__cause__, SplitGroupError):
                raise exc.__cause__ from exc
            raise TrainingError(f"external memory matrix ({objective}, {self.dir}): {exc}") from exc

    def train(self, params: dict[str, Any], dtrain: Any, rounds: int, booster: Any = None) -> Any:
        return xgb_train(params, dtrain, rounds, booster)

    def scorer(self, idx: np.ndarray, objective: str, margin: PopularityMargin | None) -> Scorer:
        return _SpilledScorer(self, np.asarray(idx), margin)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": EXTERNAL_MEMORY,
            "chunks": len(self._files),
            "batch_rows": self.batch_rows,
            "ext_mem_matrices": self.matrices,
            "batches_fed": self.batches_fed,
        }

    def close(self) -> None:
        self._files = []
        self._tmp.cleanup()


class ExternalMemoryEngine:
    """Opens rows as :class:`ExternalMemoryData`: chunk loaders as they are, an in-memory FitSet cut
    into chunks. ``batch_bytes``: features per batch; by default a quarter of the options' memory
    budget, between :data:`MIN_BATCH_BYTES` and :data:`DEFAULT_BATCH_BYTES` (XGBoost holds a batch
    and its quantized page)."""

    def __init__(self, workdir: str | Path | None = None, batch_bytes: int | None = None):
        self.workdir, self.batch_bytes = workdir, batch_bytes

    def open(self, examples: FitSet | Sequence[ChunkLoader], options: Any) -> ExternalMemoryData:
        budget = getattr(options, "memory_budget_bytes", None)
        # a floor: tiny batches cost a page and an iterator round-trip each (a 10 kB budget took 30x longer)
        batch = self.batch_bytes or max(MIN_BATCH_BYTES, min(DEFAULT_BATCH_BYTES, (budget or DEFAULT_BATCH_BYTES) // 4))
        if not isinstance(examples, Sequence):
            examples = chunks_of(examples, rows_for(batch, examples.X.shape[1]))
        return ExternalMemoryData(examples, self.workdir, batch)


def _spill(chunks: Sequence[ChunkLoader], where: Path) -> tuple[FitSet, list[np.ndarray], np.ndarray]:
    """Load each chunk once: its features to ``where/chunk-<i>.npy`` (memory-mapped back), its
    labels, groups, times and sources kept. Returns (rows without features, maps, row offsets)."""
    from models.train import FitSet

    files, meta, width = [], [], None
    for i, load in enumerate(chunks):
        try:
            part = load()
        except Exception as exc:
            raise TrainingError(f"external memory fit: chunk {i} did not load: {exc}") from exc
        X = np.ascontiguousarray(part.X, dtype=np.float32)
        if X.ndim != 2 or (width is not None and X.shape[1] != width):
            raise TrainingError(
                f"external memory fit: chunk {i} has features of shape {X.shape}, expected (n, {width})"
            )
        width = X.shape[1]
        path = where / f"chunk-{i}.npy"
        np.save(path, X)
        files.append(np.load(path, mmap_mode="r"))
        meta.append((part.y, part.groups, part.time, part.source))
        del part, X  # one chunk in memory at a time
    y, g, t, s = (np.concatenate(col) for col in zip(*meta, strict=True))
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in files])]).astype(np.int64)
    rows = FitSet(
        np.zeros((len(y), 0), np.float32),
        np.asarray(y, np.float32),
        np.asarray(g, np.int64),
        np.asarray(t, np.int64),
        s,
    )
    return rows, files, offsets


def _batch_iter(
    data: ExternalMemoryData, idx: np.ndarray | None, objective: str, margin: PopularityMargin | None, cache_prefix: str
) -> Any:
    """The ``xgb.DataIter`` of one ExtMemQuantileDMatrix (defined here: xgboost is imported lazily).
    It checks each batch's groups against the previous ones: a group cut across batches raises
    :class:`SplitGroupError` (XGBoost itself would count the pieces as separate queries)."""
    import xgboost as xgb

    class BatchIter(xgb.DataIter):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] | None = None
            self._seen: list[np.ndarray] = []
            super().__init__(cache_prefix=cache_prefix, release_data=True)

        def next(self, input_data: Callable[..., None]) -> bool:
            if self._it is None:
                self._it = data.arrays(idx, objective, margin)
            batch = next(self._it, None)
            if batch is None:
                return False
            if "qid" in batch:
                self._seen.append(batch["qid"])
                check_whole_groups(self._seen)
            data.batches_fed += 1
            input_data(**batch)
            return True

        def reset(self) -> None:
            self._it, self._seen = None, []

    return BatchIter()


class _SpilledScorer:
    """The inner validation rows copied once, in fit order, to one ``.npy`` and scored by blocks."""

    def __init__(self, data: ExternalMemoryData, idx: np.ndarray, margin: PopularityMargin | None):
        path = data.dir / f"validation-{data.matrices}.npy"
        self._X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(idx), data.n_features))
        self.base = np.zeros(len(idx))
        self._step = data.batch_rows
        for a in range(0, len(idx), self._step):
            block = data.gather(idx[a : a + self._step])
            self._X[a : a + len(block)] = block
            if margin is not None:
                self.base[a : a + len(block)] = margin.values(block)
        self._X.flush()

    def margins(self, booster: Any) -> np.ndarray:
        n = len(self._X)
        parts = [
            booster.inplace_predict(np.asarray(self._X[a : a + self._step]), predict_type="margin", missing=np.nan)
            for a in range(0, n, self._step)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def chunks_of(examples: FitSet, rows: int, copy: bool = False) -> list[ChunkLoader]:
    """An in-memory FitSet as chunk loaders of ``rows`` rows (for engines that take chunks); with
    ``copy``, each loader holds a copy of its rows (to be pickled to a worker alone)."""
    n = len(examples)
    step = max(1, int(rows))
    return [_Slice(examples, a, min(n, a + step), copy) for a in range(0, n, step)]


class _Slice:
    """A picklable loader of rows ``[a, b)`` of a FitSet (a lambda would not travel to a worker)."""

    def __init__(self, examples: FitSet, a: int, b: int, copy: bool = False):
        self.examples, self.a, self.b = (examples.take(np.arange(a, b)), 0, b - a) if copy else (examples, a, b)

    def __call__(self) -> FitSet:
        return self.examples.take(np.arange(self.a, self.b))


def rows_for(budget_bytes: int | None, features: int, default: int = 1 << 30) -> int:
    """Rows whose features fit ``budget_bytes`` (``default`` without a budget)."""
    if budget_bytes is None:
        return default
    return max(1, math.floor(budget_bytes / max(1, feature_bytes(1, features))))
