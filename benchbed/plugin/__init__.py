"""The plugin contract: the hooks (``hookspecs``), the types they pass (``types``), the building
blocks a method composes (``toolkit``), loading plugins from the ``benchbed`` entry-point group and
dispatching to one method (``manager``), and the core's own contributions through the same hooks
(``defaults``). ``benchbed.api`` re-exports what a plugin may use. Imports the layers below it (config,
data, model, train, robustness, secure); nothing below imports it."""
