"""Errors raised by the feature code. One root, specific subclasses."""


class FeatureError(Exception):
    """Root of every error the ``features`` package raises."""


class InvalidEvent(FeatureError):
    """An event breaks a rule of the contract that the Avro schema cannot express."""


class StateVersionError(FeatureError):
    """Serialized state was written by an incompatible state version."""


class SpecError(FeatureError):
    """A feature spec is malformed, or does not match the spec a state or model was built with."""
