"""Running suites: loading and checking a suite file against what is installed (``suite``), the run
directory and its layout, owned by one module (``rundir``), the shared teachers (``teacher``), entries
under the core's rules (``runner``), a model trained elsewhere checked against its claims
(``verify``), scheduling them on Ray (``scheduling``), progress output and
provenance. Imports the plugin contract and everything below it; ``report`` and the CLI sit above."""
