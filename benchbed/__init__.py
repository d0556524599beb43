"""benchbed: one protocol for ReLU-linearization methods in private inference.

``benchbed.load_model(board_or_run, entry)`` returns a published entry's linearized model (the zoo);
``benchbed.read_leaderboard(path)`` a published board's JSON twin, of either schema version, as version 2
has it."""

from benchbed.report.board_json import read_leaderboard
from benchbed.submissions.zoo import load_model

__version__ = "0.1.0"
__all__ = ["load_model", "read_leaderboard"]
