"""The one test kit: builders and helpers every test folder shares (``from tests.kit import events``).

Read in this order:

- ``events``: hand-written events, one ``T0``, the ``act``/``biz`` builders, ``fold``.
- ``oracle``: the brute-force feature oracle and the comparisons of feature vectors and states.
- ``strategies``: hypothesis strategies for event histories and arrival orders.
- ``records``: events as the readers see them: log records (``Rec``, ``to_records``,
  ``world_records``) for the trainer, decoded items for the worker's ``process``.
- ``topics``: the session broker's topics: a unique topic set, publishing a world, reading
  topics, predictions and changelog states back.
- ``runs``: expected runs (what a fault-free worker produces, from the log) and the accounting
  invariant a faulty run is checked against; running a worker as a process or in a thread.
- ``proxy``: a TCP forwarder for fault injection (a broker outage).
- ``ops``: paths of the Prometheus rules and the ``promtool``/``prometheus`` binaries.

Brokers come from the fixtures in ``tests/conftest.py`` only; a free port from
``consumer.io.brokers.free_port``.
"""
