"""A simulated local-business site that produces a realistic, deterministic event history.

``sim.world`` is the whole model: :class:`~sim.world.WorldConfig` (every knob, a fixed start time,
a seed), :func:`~sim.world.generate` (``BusinessEvent``/``ActivityEvent`` in delivery order, with
late and duplicate deliveries), :func:`~sim.world.generate_records` (the same stream as Avro-ready
dicts, faster) and :class:`~sim.world.World` (the hidden ground truth, for tests and reports only).
:meth:`WorldConfig.sparse <sim.world.WorldConfig.sparse>` is the sparse, Yelp-like preset (thousands
of businesses over years, a few events per business and month, no page views).
``sim.catalog`` holds the static vocabulary (cities, categories, name parts); ``python -m sim.bench``
measures generation and Avro-writing speed.
"""

from sim.world import World, WorldConfig, expected_event_count, generate, generate_records

__all__ = ["World", "WorldConfig", "expected_event_count", "generate", "generate_records"]
