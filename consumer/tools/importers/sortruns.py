"""External sort for importers: items in sorted runs on disk, merged back in order.

Runs of ``run_size`` items are sorted in memory and written as JSON-lines chunks (never pickle,
even for our own files); ``merged()`` k-way merges them (``heapq.merge``), in rounds of at most
``MAX_FANIN`` runs (open files, reader buffers). Memory holds one run being filled plus one chunk
per run being merged.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from consumer.errors import YelpImportError

CHUNK = 4096  # items per spilled chunk (one JSON line): what one run's reader holds during the merge
MAX_FANIN = 64  # runs merged at once; more are merged in rounds (open files, reader buffers)


# A spilled item: (event_time, rank, event_id, seq, payload). ``seq`` (input order) makes every
# item distinct, so tuple comparison never reaches the payload; the merge order is thus
# (event_time, rank, event_id), deterministic, with input order only between exact duplicates.
def _dump_chunk(items: list[Any], f: Any) -> None:
    # JSON, not pickle: loading a pickle can run code, and the rule has no exception for our own
    # temp files. Items are tuples of str/int/float/bool/None and lists of str; they come back as
    # lists, which compare and unpack the same.
    f.write(json.dumps(items, separators=(",", ":")).encode("utf-8"))
    f.write(b"\n")


def _write_chunks(path: Path, items: Iterable[Any]) -> int:
    with open(path, "wb") as f:
        buf: list[Any] = []
        for it in items:
            buf.append(it)
            if len(buf) >= CHUNK:
                _dump_chunk(buf, f)
                buf = []
        if buf:
            _dump_chunk(buf, f)
    return path.stat().st_size


def read_chunks(path: Path) -> Iterator[Any]:
    with open(path, "rb") as f:
        for line in f:
            yield from json.loads(line)


def spill_items(items: list[Any], f: Any) -> None:
    if not items:
        return
    try:
        _dump_chunk(items, f)
    except OSError as exc:
        raise YelpImportError(f"cannot write the business spill {f.name} (free space? see --tmp-dir): {exc}") from exc
    items.clear()


class SortedRuns:
    def __init__(self, folder: Path, run_size: int):
        self.folder = folder
        self.run_size = run_size
        self.buf: list[Any] = []
        self.paths: list[Path] = []
        self.count = 0
        self.bytes = 0
        self.written = 0

    def add(self, item: Any) -> None:
        self.buf.append(item)
        if len(self.buf) >= self.run_size:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        self.buf.sort()
        self.count += len(self.buf)
        self.bytes += self._write(self.buf)
        self.buf = []

    def _write(self, items: Iterable[Any]) -> int:
        self.written += 1
        path = self.folder / f"run-{self.written:06d}.bin"
        try:
            size = _write_chunks(path, items)
        except OSError as exc:
            raise YelpImportError(f"cannot write sort run {path} (free space? see --tmp-dir): {exc}") from exc
        self.paths.append(path)
        return size

    def merged(self) -> Iterator[Any]:
        self.flush()
        while len(self.paths) > MAX_FANIN:
            group, self.paths = self.paths[:MAX_FANIN], self.paths[MAX_FANIN:]
            self._write(heapq.merge(*[read_chunks(p) for p in group]))
            for p in group:
                p.unlink()
        return heapq.merge(*[read_chunks(p) for p in self.paths])
