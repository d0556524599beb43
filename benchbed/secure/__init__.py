"""Secure pricing and measurement. ``lowering`` holds the threat-model rules (what folds, what is
secret, the eval-mode trace) that both the price and the export follow; ``cost`` prices one inference
per phase (setup, offline, online) under a protocol profile (``profiles/`` holds the SPU-calibrated
and the published ones) without JAX or SPU; ``published`` sets the prices beside published systems'
figures; ``export`` turns a model into a JAX function for SPU; ``spu_runtime`` runs one with every
party profiled, over ``links`` that delay every message where rounds are measured; ``measure``
measures a model in SPU against its price; ``calibrate`` measures the profiles. Pricing imports only
``config``, ``model`` and ``errors``; only ``export``, ``spu_runtime``, ``measure`` and ``calibrate``
touch JAX and SPU."""
