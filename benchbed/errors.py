"""The one exception type that reaches a user as a single line, and the rule for cutting any other
exception down to one."""

# How much of a foreign exception's message a one-line error keeps.
FIRST_LINE_CHARS = 160


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


def first_line(exc: BaseException, limit: int = FIRST_LINE_CHARS) -> str:
    """The first non-empty line of ``exc``'s message, cut to ``limit`` characters; its type's name
    when it has no message. What a one-line error quotes of a library's exception."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]
