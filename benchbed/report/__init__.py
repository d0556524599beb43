"""Reporting: records → tables (``tables``, aggregation only) → markdown (``markdown`` and its template),
a JSON twin, the figure (``figure``) and a self-contained HTML page (``html``), published by ``board``;
the papers' claims tested on the records with their statistics (``claims``). Reads run directories
through ``benchbed.run.rundir``; nothing imports it but the CLI."""
