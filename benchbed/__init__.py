"""benchbed: one protocol for ReLU-linearization methods in private inference."""

__version__ = "0.1.0"
