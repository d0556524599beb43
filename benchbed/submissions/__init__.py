"""Models that leave or enter a run from outside: ``describe`` (a suite's model, sites and splits for a
lab that trains elsewhere; ``benchbed describe``, ``api.build_model``, ``api.suite_splits``), ``verify``
(a model trained elsewhere checked against its claims; ``benchbed verify``) and ``zoo``
(``benchbed.load_model``: a published entry or a plain-format folder loaded back). Imports ``run`` and
everything below it; ``report`` sits above."""
