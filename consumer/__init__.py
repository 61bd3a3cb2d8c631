"""The Kafka side of streamrank: the only package that talks to a broker.

Rooms, lower ones first (each imports only from the ones before it, plus ``features`` and
``models``):

``config`` (one frozen settings object from the environment), ``errors`` (``ConsumerError`` and
its subclasses; the whole tree is in ``features.errors``), ``logsetup`` (log format and the Kafka
clients' log levels) →
``pipeline`` (no Kafka: codec, decode, order, process, predictions, state store, arms) →
``io`` (Kafka clients, transports, input-log reader, time index, publishing, brokers) →
``runtime`` (the worker: poll → decode → order → process → score → publish → checkpoint) →
``trainer`` (the periodic training process) → ``tools`` (replay, diff, report, parity, bench,
demo, closed loop, importers) → ``cli`` (the ``streamrank`` command, one module per subcommand).
"""
