"""Tools around the worker, for people running it: nothing in ``runtime`` imports them.

``replay`` (re-run a model over a range of the input log), ``topicreads`` (predictions and
conversions read back from the topics), ``diff`` (compare two prediction streams), ``report``
(arms vs hold-out, online vs offline), ``parity`` (online/offline feature parity), ``bench`` (the
worker against its Kafka client's ceiling; ``benchkit`` holds the measured loops, ``benchload``
the paced load and latency reader), ``demo`` (``make demo``), ``closedloop`` (a simulated world
that reacts to the served ranking), ``importers`` (real datasets as event logs).
"""
