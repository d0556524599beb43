"""Datasets: the registry any plugin adds loaders to, the built-in loaders, and the resident uint8
tensors with their batches that methods train on (``bundle``) — the test split held apart from what
methods see. Imports only ``benchbed.errors``."""
