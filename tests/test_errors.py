"""One exception root for the project: the tree in ``features.errors``' docstring, every error
class in a package's ``errors`` module, and ``streamrank`` mapping the root to one line."""

from __future__ import annotations

import ast
import builtins
import inspect
import threading
from pathlib import Path

import pytest

import consumer.errors
import features.errors
import models.errors
from consumer.cli import generate, main
from consumer.errors import ConfigError
from features.errors import SpecError, StreamrankError

ROOT = Path(__file__).resolve().parent.parent
ERRORS_MODULES = (features.errors, models.errors, consumer.errors)


def _error_classes() -> dict[str, type]:
    return {
        name: cls
        for mod in ERRORS_MODULES
        for name, cls in vars(mod).items()
        if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == mod.__name__
    }


def test_every_package_root_is_under_the_one_root():
    assert consumer.errors.StreamrankError is StreamrankError
    for root in (features.errors.FeatureError, models.errors.ModelError, consumer.errors.ConsumerError):
        assert issubclass(root, StreamrankError)
    assert all(issubclass(cls, StreamrankError) for cls in _error_classes().values())


def _tree() -> dict[str, str | None]:
    """The docstring's tree as {class: parent} (indentation gives the parent)."""
    doc = features.errors.__doc__
    lines = doc[doc.index("::\n\n") + 4 :].split("\n\n")[0].splitlines()
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in lines:
        depth, name = len(line) - len(line.lstrip()), line.split()[0]
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def test_the_roots_docstring_shows_the_whole_tree():
    tree, classes = _tree(), _error_classes()
    assert set(tree) == set(classes), "the tree in features/errors.py's docstring lists exactly the error classes"
    for name, cls in classes.items():
        assert tree[name] == (None if cls is StreamrankError else cls.__bases__[0].__name__), name


def test_no_error_class_lives_outside_an_errors_module():
    known = set(_error_classes()) | {
        n for n, v in vars(builtins).items() if inspect.isclass(v) and issubclass(v, BaseException)
    }
    hidden = []
    for package in ("features", "models", "consumer", "sim"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = {
                        b.id if isinstance(b, ast.Name) else b.attr
                        for b in node.bases
                        if isinstance(b, (ast.Name, ast.Attribute))
                    }
                    if bases & known:
                        hidden.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not hidden, f"error classes belong in the package's errors module: {hidden}"


@pytest.mark.parametrize(
    "exc",
    [
        features.errors.SpecError("spec 'x' has no window 7d"),
        models.errors.ModelRefused("model v1: model.ubj missing"),
        models.errors.TrainingError("3 examples: too few for a train/validation split"),
    ],
)
def test_main_prints_one_line_for_a_features_or_models_error(monkeypatch, capsys, exc):
    def fails(args, cfg):
        raise exc

    monkeypatch.setattr(generate, "cmd_generate", fails)
    assert main(["generate", "--out", "unused.jsonl"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {exc}\n"


def test_a_periodic_trainer_retries_a_failed_training_run():
    from consumer.trainer.loop import run_every

    stop, calls, errors = threading.Event(), [], []

    def once():
        calls.append(1)
        if len(calls) == 3:
            stop.set()
        raise models.errors.TrainingError("too few examples")

    run_every(0.0, once, stop, errors.append)
    assert len(calls) == 3 and all(isinstance(e, models.errors.TrainingError) for e in errors)


@pytest.mark.parametrize("error", [ConfigError("STREAMRANK_HORIZON_MS must be > 0"), SpecError("bad spec")])
def test_a_periodic_trainer_stops_on_a_settings_mistake(error):
    from consumer.trainer.loop import run_every

    stop, calls, errors = threading.Event(), [], []

    def once():
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        run_every(0.0, once, stop, errors.append)
    assert len(calls) == 1 and not errors
