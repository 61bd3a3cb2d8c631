"""The model registry: a directory shared by the trainer (writer) and the workers (readers).

Layout::

    <root>/
      v20260301120000-3fa2b9c1/     one folder per registered model, never modified once visible
        model.ubj                   XGBoost UBJSON (``Booster.save_raw("ubj")``); never pickle
        metadata.json               version, feature set (version + full spec), code version, data
                                    range, params, metrics, gates, promotion decision and reason
        report.md, *.png            the human report (``models.report``)
      promoted.json                 the pointer: {"version", "reason", "promoted_at", "previous"}
      promotions.jsonl              every promotion ever made, one JSON object per line

**Version names** are ``v{UTC YYYYmmddHHMMSS}-{first 8 hex of the model's sha256}``: sortable by
creation time (``list_versions`` is chronological), unique without a lock or a counter shared
between trainers (two trainers never race for "the next number"), and the hash ties the name to the
bytes. If the name is taken (the same model bytes registered twice in one second), the timestamp is
bumped by a second until free.

**Atomicity.** A version is written in a hidden temporary folder and renamed into place, so a
reader never sees a half-written version. The pointer is replaced with write-temp + fsync +
``os.replace``: a reader sees the old or the new pointer, never a torn one.

**Loading** (:meth:`ModelRegistry.load`) refuses (:class:`~models.errors.ModelRefused`) a model
whose files are missing, whose bytes do not match the recorded sha256 or do not parse, whose
feature-set version differs from the running code's (``DEFAULT_SPEC.version`` or the spec passed),
or whose number of features does not match. :meth:`LoadedModel.validate` additionally runs the
hand-written sanity set (``models.sanity``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ModelRefused, RegistryError

MODEL_FILE = "model.ubj"
METADATA_FILE = "metadata.json"
POINTER_FILE = "promoted.json"
HISTORY_FILE = "promotions.jsonl"
VERSION_RE = re.compile(r"^v\d{14}-[0-9a-f]{8}$")
METADATA_SCHEMA = 1


# ----------------------------------------------------------------------------- loaded model
class LoadedModel:
    """A model ready to score feature rows built with :attr:`spec`.

    ``score`` is one vectorised ``inplace_predict`` call (thread-safe in XGBoost; with the recorded
    base margin, if any, passed as its ``base_margin``); for ``rank:*``
    objectives the scores are margins (only their order within a group means anything), for
    ``binary:logistic`` probabilities.
    """

    __slots__ = ("booster", "feature_set_version", "margin", "metadata", "n_features", "spec", "version")

    def __init__(self, version: str, spec: Any, booster: Any, metadata: Mapping[str, Any] | None = None):
        self.version = version
        self.spec = spec
        self.feature_set_version = spec.version
        self.booster = booster
        self.metadata = dict(metadata or {})
        self.n_features = len(spec.names)
        # The base margin the model was trained with (``metadata["model"]["base_margin"]``,
        # ``models.baseline.PopularityMargin``): added to every score exactly as in training.
        # A model without the record scores with its trees alone, as before.
        record = (self.metadata.get("model") or {}).get("base_margin")
        self.margin = None
        if record is not None:
            from models.baseline import PopularityMargin
            from models.errors import ModelError

            try:
                self.margin = PopularityMargin.from_dict(record, spec)
            except ModelError as exc:
                raise ModelRefused(f"model {version}: {exc}") from exc

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"model {self.version}: expected rows of {self.n_features} features, got shape {X.shape}")
        if X.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        if X.dtype != np.float32 or not X.flags.c_contiguous:
            X = np.ascontiguousarray(X, dtype=np.float32)
        if self.margin is None:
            return np.asarray(self.booster.inplace_predict(X, validate_features=False), dtype=np.float64).reshape(-1)
        base = self.margin.values(X).astype(np.float32)
        out = self.booster.inplace_predict(X, validate_features=False, base_margin=base)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def sanity_failures(self) -> list[str]:
        from models.sanity import check_sanity

        return check_sanity(self)

    def validate(self) -> None:
        """Run the sanity set; raise :class:`ModelRefused` listing the failures."""
        failures = self.sanity_failures()
        if failures:
            raise ModelRefused(f"model {self.version} fails the sanity set: " + "; ".join(failures))

    def __repr__(self) -> str:
        return f"LoadedModel(version={self.version!r}, feature_set_version={self.feature_set_version!r})"


# --------------------------------------------------------------------------------- registry
class ModelRegistry:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    # ------------------------------------------------------------------ reading (the worker)
    def list_versions(self) -> list[str]:
        """Registered versions, oldest first."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if VERSION_RE.match(p.name) and p.is_dir())

    def latest_version(self) -> str | None:
        versions = self.list_versions()
        return versions[-1] if versions else None

    def promoted(self) -> dict[str, Any] | None:
        """The pointer's content, or None when nothing was ever promoted."""
        p = self.path / POINTER_FILE
        try:
            raw = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"cannot read {p}: {exc}") from exc
        try:
            doc = json.loads(raw)
            version = doc["version"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"malformed promotion pointer {p}: {exc}") from exc
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise RegistryError(f"malformed promotion pointer {p}: version {version!r}")
        return doc

    def promoted_version(self) -> str | None:
        doc = self.promoted()
        return None if doc is None else doc["version"]

    def metadata(self, version: str) -> dict[str, Any]:
        d = self._version_dir(version)
        try:
            return json.loads((d / METADATA_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise RegistryError(f"version {version} has no {METADATA_FILE}") from exc
        except (OSError, ValueError) as exc:
            raise RegistryError(f"version {version}: unreadable {METADATA_FILE}: {exc}") from exc

    def version_dir(self, version: str) -> Path:
        return self._version_dir(version)

    def load(self, version: str | None = None, spec: Any | None = None) -> LoadedModel:
        """Load ``version`` (default: the promoted one) for the running feature code.

        ``spec``: the feature spec the caller will build rows with (default ``DEFAULT_SPEC``).
        Raises :class:`ModelRefused` for anything that makes the model unsafe to serve.
        """
        import xgboost as xgb

        from features.spec import DEFAULT_SPEC, FeatureSpec

        running = spec if spec is not None else DEFAULT_SPEC
        if version is None:
            try:
                version = self.promoted_version()
            except RegistryError as exc:
                raise ModelRefused(str(exc)) from exc
            if version is None:
                raise ModelRefused(f"no promoted model in {self.path}")
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise ModelRefused(f"not a model version: {version!r}")
        d = self.path / version
        if not d.is_dir():
            raise ModelRefused(f"model {version} is not in the registry {self.path}")
        try:
            meta = json.loads((d / METADATA_FILE).read_text(encoding="utf-8"))
            fs = meta["feature_set"]
            recorded_version = fs["version"]
            model_info = meta["model"]
        except FileNotFoundError as exc:
            raise ModelRefused(f"model {version}: {METADATA_FILE} is missing") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelRefused(f"model {version}: unreadable or incomplete {METADATA_FILE}: {exc}") from exc
        if recorded_version != running.version:
            raise ModelRefused(
                f"model {version} was trained on feature set {recorded_version}, "
                f"the running code computes {running.version}"
            )
        try:
            model_spec = FeatureSpec.from_dict(fs["spec"])
        except Exception as exc:  # any failure to rebuild the spec makes the model unusable
            raise ModelRefused(f"model {version}: recorded feature spec is unreadable: {exc}") from exc
        if model_spec.version != recorded_version or tuple(model_spec.names) != tuple(running.names):
            raise ModelRefused(f"model {version}: recorded feature spec does not match its version {recorded_version}")
        try:
            raw = (d / MODEL_FILE).read_bytes()
        except FileNotFoundError as exc:
            raise ModelRefused(f"model {version}: {MODEL_FILE} is missing") from exc
        except OSError as exc:
            raise ModelRefused(f"model {version}: cannot read {MODEL_FILE}: {exc}") from exc
        digest = hashlib.sha256(raw).hexdigest()
        if digest != model_info.get("sha256"):
            raise ModelRefused(f"model {version}: {MODEL_FILE} is corrupt (sha256 {digest[:12]} != recorded)")
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(raw))
        except xgb.core.XGBoostError as exc:
            raise ModelRefused(f"model {version}: {MODEL_FILE} does not parse: {str(exc)[:200]}") from exc
        booster.set_param({"nthread": int(model_info.get("predict_nthread", 1))})
        n = booster.num_features()
        if n != len(running.names):
            raise ModelRefused(f"model {version} expects {n} features, the feature set has {len(running.names)}")
        return LoadedModel(version, model_spec, booster, meta)

    def promotions(self) -> list[dict[str, Any]]:
        """The promotion history, oldest first (lines that do not parse are skipped)."""
        p = self.path / HISTORY_FILE
        if not p.exists():
            return []
        out = []
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    # ----------------------------------------------------------------- writing (the trainer)
    def register(
        self,
        model_bytes: bytes,
        metadata: Mapping[str, Any],
        write_extra: Callable[[Path, str, dict[str, Any]], object] | None = None,
        now: _dt.datetime | None = None,
    ) -> str:
        """Store a model and its metadata as a new version; return the version name.

        ``model_bytes``: ``booster.save_raw("ubj")``. ``metadata`` must hold ``feature_set``
        (``{"version", "spec"}``); ``model`` (sha256, size) and ``version``/``created_at`` are filled
        in here. ``write_extra(folder, version, metadata)`` may add files (the report) before the
        version becomes visible.
        """
        if "feature_set" not in metadata or "version" not in metadata["feature_set"]:
            raise RegistryError("metadata must contain feature_set.version")
        self.path.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(model_bytes).hexdigest()
        now = now or _dt.datetime.now(_dt.UTC)
        tmp = self.path / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            version = self._free_version(now, digest)
            meta = dict(metadata)
            meta["schema"] = METADATA_SCHEMA
            meta["version"] = version
            meta.setdefault("created_at", now.isoformat(timespec="seconds"))
            meta["model"] = {
                **dict(meta.get("model", {})),
                "file": MODEL_FILE,
                "format": "ubj",
                "sha256": digest,
                "bytes": len(model_bytes),
            }
            _write_file(tmp / MODEL_FILE, model_bytes)
            _write_file(tmp / METADATA_FILE, _json_bytes(meta))
            if write_extra is not None:
                write_extra(tmp, version, meta)
            _fsync_dir(tmp)
            while True:
                try:
                    os.rename(tmp, self.path / version)  # atomic; fails if the name appeared meanwhile
                    break
                except OSError:
                    if not (self.path / version).exists():
                        raise
                    version = self._free_version(now, digest)  # lost a race: rewrite the name
                    meta["version"] = version
                    _write_file(tmp / METADATA_FILE, _json_bytes(meta))
            _fsync_dir(self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return version

    def promote(
        self, version: str, reason: str, decided_by: str = "manual", details: Mapping[str, Any] | None = None
    ) -> None:
        """Point the workers at ``version`` (atomic) and append the decision to the history."""
        self.metadata(version)  # must exist and be readable
        previous = None
        try:
            previous = self.promoted_version()
        except RegistryError:
            previous = None  # a malformed pointer is replaced
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        doc: dict[str, Any] = {
            "version": version,
            "reason": reason,
            "promoted_at": now,
            "previous": previous,
            "decided_by": decided_by,
        }
        if details:
            doc["details"] = dict(details)
        _atomic_write(self.path / POINTER_FILE, _json_bytes(doc))
        _append_line(self.path / HISTORY_FILE, json.dumps(doc, sort_keys=True, default=_json_default))

    # ---------------------------------------------------------------------------- helpers
    def _version_dir(self, version: str) -> Path:
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise RegistryError(f"not a model version: {version!r}")
        d = self.path / version
        if not d.is_dir():
            raise RegistryError(f"unknown model version {version} in {self.path}")
        return d

    def _free_version(self, now: _dt.datetime, digest: str) -> str:
        t = now
        while True:
            version = f"v{t.strftime('%Y%m%d%H%M%S')}-{digest[:8]}"
            if not (self.path / version).exists():
                return version
            t += _dt.timedelta(seconds=1)


# ----------------------------------------------------------------------------- code version
def code_version() -> dict[str, Any]:
    """Package version and git sha (``$STREAMRANK_GIT_SHA``, else ``git rev-parse``, else None)."""
    try:
        from importlib.metadata import version as _pkg_version

        pkg = _pkg_version("streamrank")
    except Exception:  # not installed (a source checkout run without pip install)
        pkg = "unknown"
    sha = os.environ.get("STREAMRANK_GIT_SHA") or None
    if sha is None:
        try:
            res = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if res.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", res.stdout.strip()):
                sha = res.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            sha = None
    return {"package": pkg, "git_sha": sha}


# ----------------------------------------------------------------------------- file helpers
def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(o: Any) -> Any:
    """Non-finite floats (an undefined metric) become null: JSON has no NaN."""
    if isinstance(o, float) or isinstance(o, np.floating):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_bytes(doc: Any) -> bytes:
    return (json.dumps(_finite(doc), indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n").encode(
        "utf-8"
    )


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _append_line(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
