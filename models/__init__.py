"""Training, evaluation and serving-side loading of the XGBoost ranking model.

Depends on ``features`` (and is the only package that imports xgboost); never on Kafka or
``consumer``: the trainer takes an iterable of log records (``consumer.io.inputlog`` yields them),
the worker takes a :class:`~models.registry.ModelRegistry`. Reading order:

1. ``dataset``  - what an example is: label definition, :func:`~models.dataset.scoring_moments`
   (the scoring-moment rule), deterministic sampling, ``TrainingSet``; ``snapshots`` - the
   snapshot frame (the rankings a reader of the predictions sees) and its times;
2. the build: ``streambuild`` (one partition at a time in the worker's merge order, labels by a
   streaming look-ahead, bounded memory) -> ``shards`` (rows as .npy columns) -> ``buildstore``
   (checkpoints, incremental runs, partitions in processes or on Dask) -> ``rowsets`` (rows back
   as a ``TrainingSet``, snapshot frames or out-of-core chunks);
3. ``train``    - time split with a gap >= the label horizon, the training examples (snapshot
   examples of the training period, event examples or both), the XGBoost fit (``rank:ndcg`` or
   ``binary:logistic``) with its rounds chosen on an inner split of the training period, an
   optional popularity base margin; it runs on an engine of ``fitdata`` (in memory, external
   memory: ``xgb.ExtMemQuantileDMatrix`` over group-whole batches) or ``daskfit`` (``xgboost.dask``
   on a ``distributed`` cluster; the optional ``distributed`` extra, never imported by default);
4. ``evaluate`` - NDCG@10, AUC, top-k conversion capture (model vs popularity vs random), lift,
   gain importance and its shifts;
5. ``sanity``   - the hand-written sanity set (``models/sanity/*.json``) and ``check_sanity``;
6. ``registry`` - the model directory: versions, metadata, atomic promotion pointer, refusing
   loads (``ModelRefused``), ``LoadedModel.score``;
7. ``report``   - the markdown report and PNG charts of a run;
8. ``trainer``  - :func:`~models.trainer.train_and_register`: all of the above plus the gates.

Errors: ``models.errors`` (root ``ModelError``, under the project's root
``features.errors.StreamrankError``). ``python -m models.bench`` measures the build throughput and
the fit on a simulated world; ``python -m models.benchfit`` the fit time and peak RSS in memory vs
in external memory; ``python -m models.benchscale`` the build at scale (memory over history,
incremental reads, processes, Dask).
"""
