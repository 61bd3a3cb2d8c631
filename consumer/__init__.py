"""The Kafka side of streamrank: the only package that talks to a broker.

Reading order, following a record through the worker:

``source`` (poll the input topics) → ``codec`` (Confluent-framed Avro → events) → ``process``
(fold events into per-business state with ``features``, pick what to score) → ``score``
(one vectorised model call per batch) → ``sink`` (predictions and dead letters out, then commit).

Around that loop: ``config`` (one frozen settings object from the environment), ``kafka``
(client settings in one place, topic admin), ``broker`` (the embedded Tansu broker for tests and
the demo), ``generate`` (the simulated world onto topics or files), ``cli`` (the ``streamrank``
command).
"""
