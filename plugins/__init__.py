"""benchbed's built-in method plugins, each registered in the ``benchbed`` entry-point group."""
