"""Feature code, shared verbatim by the trainer (``models``) and the worker (``consumer``).

Imports neither Kafka nor xgboost. Reading order:

1. ``events``  - the two input event types (plain data mirroring the Avro contracts);
2. ``spec``    - the feature set: ordered names, windows, and the version hash derived from them;
3. ``state``   - per-business state, the deterministic fold ``update(state, event) -> state`` (it
   mutates and returns its argument) and the compact changelog encoding;
4. ``extract`` - ``extract(state, as_of) -> vector``, in event time;
5. ``scoring`` - the one rule for which events are scored and as of when (trainer and worker);
6. ``order``   - the deterministic order in which a partition's two input streams are applied.

``columnar`` (kernels in ``columnar_kernels``) holds a partition's states as arrays and folds and
extracts activity in compiled batches, bit for bit as ``state`` and ``extract``
(``python -m features.bench_columnar``).

``errors`` holds the exception types and the project's one root, ``StreamrankError`` (its
docstring shows the whole tree, all packages); ``bench_features`` times the hot paths
(``python -m features.bench_features``).
"""
