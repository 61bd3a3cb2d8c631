"""Score: which model the worker uses, and swapping in a newly promoted one without a restart.

A background thread watches the registry's promoted pointer. A new version is loaded and
validated there (feature-set version, sanity set) so the poll loop never blocks on it; the loop
swaps at a batch boundary. A version that fails is refused once, logged, counted, and the old
model keeps serving; it is not retried until the pointer changes again.

The fallback. A worker configured with a baseline (``STREAMRANK_BASELINE=popularity``, the default;
``models.baseline``) serves it while nothing is promoted: at start (``startup.first_model``) and
again if the promotion pointer disappears later (a model demoted by removing ``promoted.json``):
the watcher then stages the fallback, swapped in at a batch boundary like any model. The first
promoted model that loads and validates replaces it the same way. A pointer that cannot be read
is not "nothing promoted": the current model keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from models.registry import ModelRegistry

if TYPE_CHECKING:
    from consumer.pipeline.process import Scorer

log = logging.getLogger("streamrank.score")


class ModelHolder:
    def __init__(
        self,
        registry: ModelRegistry,
        poll_s: float,
        on_refused: Callable[[str, str], None] | None = None,
        fallback: Scorer | None = None,
    ):
        self.registry = registry
        self.poll_s = poll_s
        self.fallback = fallback  # served while nothing is promoted (models.baseline); None: wait for a model
        self.current: Scorer | None = None
        self._ready: Scorer | None = None
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
        if version is None:
            self._stage_fallback()
            return
        if version in self._refused:
            return
        with self._lock:
            if self._ready is not None and self._ready is self.fallback and self.current is not None:
                if self.current.version == version:  # promoted again before the fallback swapped in
                    self._ready = None
                    return
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

    def _stage_fallback(self) -> None:
        """Nothing promoted (any more): stage the fallback unless it serves or waits already."""
        fb = self.fallback
        with self._lock:
            if fb is None or self.current is None or self.current is fb or self._ready is fb:
                return  # no fallback, not started yet (startup serves it), or already there
            self._ready = fb
            serving = self.current.version
        log.warning(
            "no model is promoted any more; swapping back to the baseline at the next batch",
            extra={"model_version": fb.version, "serving": serving},
        )

    def serve_fallback(self) -> Scorer | None:
        """At start, nothing promoted: make the fallback current (None if there is none)."""
        with self._lock:
            if self.fallback is not None:
                self.current = self.fallback
            return self.fallback if self.current is self.fallback else None

    @property
    def serving_fallback(self) -> bool:
        return self.fallback is not None and self.current is self.fallback

    def take_swap(self) -> Scorer | None:
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
