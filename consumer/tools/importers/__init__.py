"""Importers: public datasets turned into streamrank event logs (no Kafka).

``yelp`` (the Yelp Open Dataset: files, scan, merge) uses ``yelp_fields`` (a record's fields),
``sortruns`` (an external sort on disk) and ``report`` (what was imported and skipped, and why).
"""
