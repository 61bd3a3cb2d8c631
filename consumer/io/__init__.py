"""Everything that talks to Kafka, below the worker and the tools.

Reading order: ``clients`` (client settings in one place, SASL/SSL pass-through, topic admin,
reading a topic to its high-water mark) → ``transport`` (the worker's consumer and producer, on
kafka-python or confluent-kafka) → ``changelog`` (the state changelog read back into partition
states) → ``inputlog`` (the input topics read in the worker's merge order,
for the trainer, replay and parity) → ``timeindex`` (a time → offset lookup that does not trust
the broker's) → ``publish`` (events onto the input topics) → ``eventfiles`` (event-log files, the
offline form of the input topics) → ``brokers`` (Tansu and Apache Kafka started on demand).
"""
