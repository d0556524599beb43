"""Running suites: loading and checking a suite file against what is installed (``suite``), the run
directory and its layout, owned by one module (``rundir``), the shared teachers (``teacher``), a
suite's model to and from its checkpoint payload (``rebuild``), an entry's life under the core's rules
(``runner``), the measuring process where every published number is made (``measurer``), an entry's
CPU time read against its metered compute (``cpu_check``), scoring a final model (``scoring``: counts,
evaluation, prices) and writing its record (``record``), processes per entry (``isolation``) and Ray
(``scheduling``), a finished run priced again
(``reprice``), progress output and provenance. Imports the plugin contract and everything below it;
``preflight``, ``submissions``, ``report`` and the CLI sit above."""
