"""The record path without a broker: bytes in, predictions and dead letters out.

Nothing here opens a Kafka connection; the worker, the trainer's log reader, replay and parity all
call it, so a record is handled the same way everywhere. Reading order:

``codec`` (Confluent-framed Avro and the file schema registry; ``schemas/``) → ``decode`` (a record
→ an event or a dead letter with its reason) → ``order`` (the one merge order of the two input
topics of a partition) → ``process`` (fold events into per-business state with ``features``, pick
what to score, one vectorised model call per batch) → ``predictions`` (the prediction record, its
id and feature hash). ``store`` holds a partition's states and the changelog entry format;
``arms`` routes businesses to experiment arms and the hold-out.
"""
