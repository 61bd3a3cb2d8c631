"""Importers: public datasets turned into streamrank event logs (no Kafka)."""
