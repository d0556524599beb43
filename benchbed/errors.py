"""The one exception type that reaches a user as a single line."""


class BenchbedError(Exception):
    """A problem the user can fix; its message says what to do. The CLI prints it on one line."""


class SuiteError(BenchbedError):
    """A suite file that fails validation; carries every problem found, each with its field path."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class BudgetExceeded(BenchbedError):
    """Raised inside an entry that used more compute than the suite grants every method."""
