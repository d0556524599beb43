"""Before a long run: what a suite will cost and whether it works, without running it. ``forecast``
(``benchbed plan``: each entry's compute and wall time from the suite alone), ``dry`` (``benchbed run
--dry-run``: every entry for a few steps, each phase timed, its export checked), ``bench`` (``benchbed
bench``: throughput of every site kind beside a plain loop and a conv-only limit). Imports ``run`` and
everything below it."""
