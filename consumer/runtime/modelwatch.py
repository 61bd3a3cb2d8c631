"""Score: which model the worker uses, and swapping in a newly promoted one without a restart.

A background thread watches the registry's promoted pointer. A new version is loaded and
validated there (feature-set version, sanity set) so the poll loop never blocks on it; the loop
swaps at a batch boundary. A version that fails is refused once, logged, counted, and the old
model keeps serving; it is not retried until the pointer changes again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from models.registry import LoadedModel, ModelRegistry

log = logging.getLogger("streamrank.score")


class ModelHolder:
    def __init__(self, registry: ModelRegistry, poll_s: float, on_refused: Callable[[str, str], None] | None = None):
        self.registry = registry
        self.poll_s = poll_s
        self.current: LoadedModel | None = None
        self._ready: LoadedModel | None = None
        self._refused: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_refused = on_refused
        self.refusals = 0

    def check_now(self) -> None:
        """Look at the pointer once; load and validate a new version if there is one."""
        try:
            version = self.registry.promoted_version()
        except Exception as exc:  # an unreadable pointer must not kill the watcher
            log.warning("cannot read the promoted pointer", extra={"error": str(exc)})
            return
        if version is None or version in self._refused:
            return
        with self._lock:
            known = {m.version for m in (self.current, self._ready) if m is not None}
        if version in known:
            return
        try:
            model = self.registry.load(version)
            model.validate()
        except Exception as exc:  # noqa: BLE001 - any failure to load or validate refuses the model, never the worker
            self._refused.add(version)
            self.refusals += 1
            log.error(
                "model refused; the current model keeps serving",
                extra={
                    "model_version": version,
                    "reason": str(exc),
                    "serving": self.current.version if self.current else None,
                },
            )
            if self._on_refused is not None:
                self._on_refused(version, str(exc))
            return
        with self._lock:
            self._ready = model
        log.info("model loaded and validated; swapping at the next batch", extra={"model_version": version})

    def take_swap(self) -> LoadedModel | None:
        """At a batch boundary: the newly validated model, made current, or None."""
        with self._lock:
            model, self._ready = self._ready, None
            if model is not None:
                self.current = model
        return model

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.poll_s):
                self.check_now()

        self._thread = threading.Thread(target=loop, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def describe(self) -> dict[str, Any]:
        return {"serving": self.current.version if self.current else None, "refused": sorted(self._refused)}
