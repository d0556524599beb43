"""The one model abstraction. Every ReLU of a network is a named ``ReLUSite`` whose kernel (ReLU,
masked, patch) decides what it computes; counts, prices, export and checkpoints read the sites and
nothing else. This package owns the sites and kernels (``sites``), how the core looks into a model
(``passes``), top-k under a budget (``selection``), the model registry and the built-in architectures,
the dual-BN transform, DaPa polynomials, checkpoints and their plain format (``plain``). It imports only ``benchbed.errors`` and
``benchbed.files``."""
