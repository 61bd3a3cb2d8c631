"""The registry: versions, refusing loads, atomic pointer, no pickle."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

import models.registry
from features.spec import DAY_MS, DEFAULT_SPEC, FeatureSpec
from models.errors import ModelError, ModelRefused, RegistryError
from models.registry import MODEL_FILE, VERSION_RE, LoadedModel, ModelRegistry

N = len(DEFAULT_SPEC.names)


def _booster(n_features: int = N, seed: int = 0, sign: float = 1.0) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    X = rng.random((300, n_features)).astype(np.float32)
    y = sign * (X[:, 0] + 0.1 * rng.random(300))
    return xgb.train({"tree_method": "hist", "max_depth": 3, "nthread": 1, "seed": seed}, xgb.DMatrix(X, label=y), 10)


def _meta(spec: FeatureSpec = DEFAULT_SPEC, **extra) -> dict:
    return {"feature_set": {"version": spec.version, "spec": spec.to_dict()}, "metrics": {"x": 1.0}, **extra}


def _register(reg: ModelRegistry, booster=None, spec: FeatureSpec = DEFAULT_SPEC, **kw) -> str:
    booster = booster or _booster()
    return reg.register(bytes(booster.save_raw("ubj")), _meta(spec), **kw)


def test_register_load_score_round_trip(tmp_path):
    reg = ModelRegistry(tmp_path)
    assert reg.list_versions() == [] and reg.promoted_version() is None
    b = _booster()
    v = _register(reg, b)
    assert VERSION_RE.match(v) and reg.list_versions() == [v]
    meta = reg.metadata(v)
    assert meta["version"] == v and meta["feature_set"]["version"] == DEFAULT_SPEC.version
    assert meta["model"]["format"] == "ubj" and len(meta["model"]["sha256"]) == 64
    m = reg.load(v)
    assert isinstance(m, LoadedModel)
    assert (m.version, m.feature_set_version, m.spec) == (v, DEFAULT_SPEC.version, DEFAULT_SPEC)
    X = np.random.default_rng(1).random((50, N)).astype(np.float32)
    s = m.score(X)
    assert s.dtype == np.float64 and s.shape == (50,)
    assert np.allclose(s, b.inplace_predict(X))
    assert m.score(np.zeros((0, N), np.float32)).shape == (0,)
    with pytest.raises(ValueError):
        m.score(np.zeros((3, N - 1), np.float32))


def test_versions_sort_by_time_and_never_collide(tmp_path):
    reg = ModelRegistry(tmp_path)
    now = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
    raw = bytes(_booster().save_raw("ubj"))
    v1 = reg.register(raw, _meta(), now=now)
    v2 = reg.register(raw, _meta(), now=now)  # same bytes, same second: bumped a second
    v3 = reg.register(bytes(_booster(seed=3).save_raw("ubj")), _meta(), now=now + dt.timedelta(hours=1))
    assert v1.startswith("v20260301120000-") and v2.startswith("v20260301120001-")
    assert reg.list_versions() == [v1, v2, v3] and reg.latest_version() == v3


def test_refuses_feature_set_mismatch(tmp_path):
    reg = ModelRegistry(tmp_path)
    v = _register(reg)
    other = FeatureSpec(windows_ms=(DAY_MS, 7 * DAY_MS))
    with pytest.raises(ModelRefused, match="feature set"):
        reg.load(v, spec=other)
    # a model trained under another feature set, loaded by code running DEFAULT_SPEC
    v2 = reg.register(bytes(_booster(n_features=len(other.names)).save_raw("ubj")), _meta(other))
    with pytest.raises(ModelRefused, match="feature set"):
        reg.load(v2)
    assert reg.load(v2, spec=other).n_features == len(other.names)


def test_refuses_wrong_number_of_features(tmp_path):
    reg = ModelRegistry(tmp_path)
    v = _register(reg, _booster(n_features=5))
    with pytest.raises(ModelRefused, match="features"):
        reg.load(v)


def test_refuses_corrupt_or_missing_files(tmp_path):
    reg = ModelRegistry(tmp_path)
    v = _register(reg)
    d = tmp_path / v
    raw = (d / MODEL_FILE).read_bytes()

    (d / MODEL_FILE).write_bytes(raw[:100] + bytes([raw[100] ^ 0xFF]) + raw[101:])
    with pytest.raises(ModelRefused, match="corrupt"):
        reg.load(v)

    # bytes that match the recorded hash but do not parse (a bad writer): still refused
    junk = raw[: len(raw) // 3]
    meta = json.loads((d / "metadata.json").read_text())
    import hashlib

    meta["model"]["sha256"] = hashlib.sha256(junk).hexdigest()
    (d / "metadata.json").write_text(json.dumps(meta))
    (d / MODEL_FILE).write_bytes(junk)
    with pytest.raises(ModelRefused, match="does not parse"):
        reg.load(v)

    (d / MODEL_FILE).unlink()
    with pytest.raises(ModelRefused, match="missing"):
        reg.load(v)

    (d / "metadata.json").write_text("{not json")
    with pytest.raises(ModelRefused):
        reg.load(v)

    with pytest.raises(ModelRefused):
        reg.load("v20990101000000-deadbeef")
    with pytest.raises(ModelRefused):
        reg.load("../etc")
    with pytest.raises(ModelRefused, match="no promoted"):
        reg.load()


def test_refused_is_a_model_error():
    assert issubclass(ModelRefused, ModelError) and issubclass(RegistryError, ModelError)


def test_promote_pointer_and_history(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1, v2 = _register(reg), _register(reg, _booster(seed=2))
    reg.promote(v1, "first")
    reg.promote(v2, "better", decided_by="trainer", details={"capture": 0.5})
    assert reg.promoted_version() == v2
    assert reg.promoted()["previous"] == v1
    hist = reg.promotions()
    assert [(h["version"], h["reason"], h["decided_by"]) for h in hist] == [
        (v1, "first", "manual"),
        (v2, "better", "trainer"),
    ]
    assert reg.load().version == v2
    with pytest.raises(RegistryError):
        reg.promote("v20990101000000-deadbeef", "nope")


def test_pointer_replace_is_atomic(tmp_path, monkeypatch):
    reg = ModelRegistry(tmp_path)
    v1, v2 = _register(reg), _register(reg, _booster(seed=2))
    reg.promote(v1, "first")
    before = (tmp_path / "promoted.json").read_bytes()
    calls = []

    def failing_replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        # the new pointer was fully written to the temp file before the swap
        assert json.loads(Path(src).read_text())["version"] == v2
        raise OSError("disk pulled out")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        reg.promote(v2, "second")
    monkeypatch.undo()
    assert calls and calls[0][1] == "promoted.json"
    assert (tmp_path / "promoted.json").read_bytes() == before
    assert reg.promoted_version() == v1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left


def test_malformed_pointer_is_an_error(tmp_path):
    reg = ModelRegistry(tmp_path)
    (tmp_path / "promoted.json").write_text('{"version": "../../x"}')
    with pytest.raises(RegistryError):
        reg.promoted_version()
    with pytest.raises(ModelRefused):
        reg.load()


def test_register_is_all_or_nothing(tmp_path):
    reg = ModelRegistry(tmp_path)

    def broken_report(folder, version, meta):
        (folder / "report.md").write_text("half")
        raise RuntimeError("report failed")

    with pytest.raises(RuntimeError):
        _register(reg, write_extra=broken_report)
    assert reg.list_versions() == []
    assert list(tmp_path.iterdir()) == []  # the hidden temp folder is gone too


def test_no_pickle_anywhere(tmp_path):
    # Every package of the project, not only models/: a pickle loaded anywhere is code execution.
    root = Path(models.registry.__file__).resolve().parents[1]
    pattern = re.compile(
        r"^\s*(import|from)\s+(pickle|cPickle|joblib|cloudpickle|dill|shelve)\b|\.pkl\b|\.pickle\b"
        r"|\b(torch\.load|np\.load\(.*allow_pickle\s*=\s*True|pd\.read_pickle)",
        re.MULTILINE,
    )
    scanned = [p for pkg in ("features", "models", "consumer", "sim") for p in (root / pkg).rglob("*.py")]
    assert len(scanned) > 40  # the scan reads the real tree
    offenders = [str(p.relative_to(root)) for p in scanned if pattern.search(p.read_text())]
    assert offenders == []
    assert pattern.search("import pickle\n") and pattern.search(
        "x = np.load(f, allow_pickle=True)"
    )  # the pattern can fail
    reg = ModelRegistry(tmp_path)
    v = _register(reg)
    files = {p.name for p in (tmp_path / v).iterdir()}
    assert files == {"model.ubj", "metadata.json"}
    assert (tmp_path / v / MODEL_FILE).read_bytes()[:1] == b"{"  # UBJSON object, not a pickle stream


def test_validate_refuses_a_model_failing_the_sanity_set(tmp_path):
    reg = ModelRegistry(tmp_path)
    v = _register(reg, xgb.train({"nthread": 1}, xgb.DMatrix(np.zeros((10, N), np.float32), label=np.zeros(10)), 1))
    m = reg.load(v)
    assert m.sanity_failures()
    with pytest.raises(ModelRefused, match="sanity"):
        m.validate()


def test_a_recorded_base_margin_is_added_to_the_score_and_checked(tmp_path):
    from models.baseline import PopularityMargin

    reg = ModelRegistry(tmp_path)
    booster = _booster()
    plain = reg.register(bytes(booster.save_raw("ubj")), _meta())
    margin = PopularityMargin(DEFAULT_SPEC)
    with_margin = reg.register(bytes(booster.save_raw("ubj")), _meta(model={"base_margin": margin.to_dict()}))
    X = np.random.default_rng(3).integers(0, 5, (40, N)).astype(np.float32)
    a, b = reg.load(plain), reg.load(with_margin)
    assert a.margin is None  # a model without the record scores as before
    np.testing.assert_allclose(a.score(X), booster.inplace_predict(X), rtol=1e-6)
    trees = booster.inplace_predict(X, base_margin=np.zeros(len(X), np.float32))
    np.testing.assert_allclose(b.score(X), trees + margin.values(X), rtol=1e-5, atol=1e-5)
    bad = dict(margin.to_dict(), columns=["count_call_1d"])
    with pytest.raises(ModelRefused, match="base margin"):
        LoadedModel("v", DEFAULT_SPEC, booster, {"model": {"base_margin": bad}})
    with pytest.raises(ModelRefused, match="base margin"):
        LoadedModel("v", DEFAULT_SPEC, booster, {"model": {"base_margin": {"kind": "other"}}})
