"""The Kafka side of streamrank: the only package that talks to a broker.

Reading order, following a record through the worker:

``worker`` (the loop: poll through ``transport``, merge the two input topics per partition) →
``order`` (each record → the item the merge takes: ``decode``/``codec``, Confluent-framed Avro →
an event, a tombstone or a dead letter, and its place in the merge; the trainer, replay, parity and
rebuild read the log through it too) → ``process`` (fold events
into per-business state with ``features``, pick what to score, one vectorised model call per
batch) → ``sink`` (predictions and dead letters out) → ``statestore`` (changed state to the
changelog) → commit. ``score`` holds the served model and its hot swap; ``rebuild`` rebuilds a
partition's state from the input topics when its changelog was written by another feature set.

Around that loop: ``config`` (one frozen settings object from the environment), ``kafka``
(client settings in one place, topic admin), ``broker`` (the embedded Tansu broker for tests and
the demo) and ``jvmbroker`` (Apache Kafka on demand), ``publish`` (the simulated world onto
topics), ``cli`` (the ``streamrank`` command).
"""
