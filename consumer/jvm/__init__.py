"""Build files for Apache Kafka on the JVM (``consumer.jvmbroker``): the Maven pom and the broker log config."""
