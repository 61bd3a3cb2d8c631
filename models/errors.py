"""Errors raised by the ``models`` package: ``ModelError`` and its subclasses, under the project's
root ``features.errors.StreamrankError`` (whose docstring shows the whole tree).

The worker catches :class:`ModelRefused` around ``ModelRegistry.load``/``LoadedModel.validate``:
a refused model is never served, the worker keeps the one it has (or scores nothing).
"""

from features.errors import StreamrankError


class ModelError(StreamrankError):
    """Root of every error the ``models`` package raises."""


class ModelRefused(ModelError):
    """A registered model must not be served: missing files, corrupt model, wrong feature set, failed sanity."""


class RegistryError(ModelError):
    """The registry directory is unusable (unknown version, unwritable, malformed pointer)."""


class TrainingError(ModelError):
    """Training cannot produce a model: not enough data for a train/validation split, bad options."""


class SplitGroupError(TrainingError):
    """A ranking group (qid) would be cut across external-memory batches or Dask partitions:
    XGBoost would silently count each piece as a query of its own, so the fit refuses."""


class CheckpointMismatch(TrainingError):
    """The build's checkpoint does not match the log it reads: a partition restarted below the
    offset the checkpoint had reached (the topic was recreated or truncated). Delete the
    trainer's working directory to rebuild from the log as it is."""
