"""Methods: one sub-package each (networks, method class, checkpoint loader).  A method is found
through its entry point in ``setup.py`` (group ``osir.methods``) and imported only when an options
file names it."""
