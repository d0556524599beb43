"""Training: the compute clock every entry is charged to (``compute``), the ``Session`` a loop runs in,
the one visible training loop ``fit`` with its schedule planned over the budget (``loop``), the shared
losses, seeding and determinism, and the device helpers. Imports ``benchbed.config``, ``data``,
``model``, ``files`` and ``errors``."""
