"""A sixth method folder outside osir (issue 22): a small feed-forward sharpening network registered only
through entry points, as a third-party package would be (``tests/test_plugin_method.py`` fakes the installed
distribution).  ``method.py`` (the ``SharpenNet`` architecture and the ``Sharpen`` method), ``card.py`` (one
release, one detector, its export), ``detect.py``, ``onnx.py``; ``releases/`` holds the release options.
Importing the package imports no torch: the card is plain data."""
