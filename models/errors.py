"""Errors raised by the ``models`` package. One root, specific subclasses.

The worker catches :class:`ModelRefused` around ``ModelRegistry.load``/``LoadedModel.validate``:
a refused model is never served, the worker keeps the one it has (or scores nothing).
"""


class ModelError(Exception):
    """Root of every error the ``models`` package raises."""


class ModelRefused(ModelError):
    """A registered model must not be served: missing files, corrupt model, wrong feature set, failed sanity."""


class RegistryError(ModelError):
    """The registry directory is unusable (unknown version, unwritable, malformed pointer)."""


class TrainingError(ModelError):
    """Training cannot produce a model: not enough data for a train/validation split, bad options."""
