"""Build files for Apache Kafka on the JVM (``consumer.io.brokers.apache``): the Maven pom and the broker log config."""
