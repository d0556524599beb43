"""benchbed: one protocol for ReLU-linearization methods in private inference.

``benchbed.load_model(board_or_run, entry)`` returns a published entry's linearized model (the zoo)."""

from benchbed.submissions.zoo import load_model

__version__ = "0.1.0"
__all__ = ["load_model"]
