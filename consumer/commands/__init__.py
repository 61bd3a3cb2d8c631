"""Further ``streamrank`` subcommands, one module each.

Every module here defines ``register(sub, common)``: ``sub`` is the argparse subparsers object,
``common`` the :mod:`consumer.cli` module (for ``add_kafka_args``, ``add_registry_args``,
``positive_int``, ``parse_time_ms``, ``parse_duration`` ...). The handler it sets with
``set_defaults(func=...)`` is called as ``func(args, cfg)`` and returns the exit code.
"""
