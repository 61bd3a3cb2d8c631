"""Feature code, shared verbatim by the trainer (``models``) and the worker (``consumer``).

Imports neither Kafka nor xgboost. Reading order:

1. ``events``  - the two input event types (plain data mirroring the Avro contracts);
2. ``spec``    - the feature set: ordered names, windows, and the version hash derived from them;
3. ``state``   - per-business state and the pure ``update(state, event) -> state``;
4. ``extract`` - ``extract(state, as_of) -> vector``, in event time.
"""
