"""The trainer as a process: ``streamrank train`` once or ``--every`` period.

Reading order: ``loop`` (read the log, ``models.trainer.train_and_register``, describe the run,
repeat) → ``metrics`` (each run as a log line, a textfile and, when periodic, a scrape endpoint).
The training itself (examples, fit, evaluation, gates, registry) lives in ``models``.
"""
