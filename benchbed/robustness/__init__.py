"""Robustness: the attacks (``attacks``), the CIFAR-C corruptions in torch (``corruptions``), the
metrics built on them — one module each (``pgd_accuracy``, ``corruption_accuracy``, ``autoattack_accuracy``) — and
their registry, the one evaluation every entry gets (``evaluate``), and robust training's pieces that
RLNet and the robust teacher share (``training``: AugMix, PGD through the adversarial BatchNorms).
Imports ``config``, ``data``, ``model``, ``train`` and ``errors``."""
