"""The one exception type that reaches a user as a single line."""


class BenchbedError(Exception):
    """A problem the user can fix; its message says what to do. The CLI prints it on one line."""


class SuiteError(BenchbedError):
    """A suite file that fails validation; carries every problem found, each with its field path."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class BudgetExceeded(BaseException):
    """Raised inside an entry that ran past the compute the suite grants every method. Like
    ``KeyboardInterrupt`` it is no ``Exception``, so a plugin's ``except Exception:`` cannot swallow it;
    and the core checks the usage after every entry anyway."""
