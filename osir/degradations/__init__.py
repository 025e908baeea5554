"""Synthetic degradations.

Per-sample degradations (registry ``DEGRADATIONS``, ``simple.py``) run in dataset workers on HxWx3
float arrays with a numpy Generator, so a sample's degradation is a function of its seed; they return
the degraded image and the parameters they drew.  Batch degradations (``BATCH_DEGRADATIONS``,
``realesrgan.py``: Real-ESRGAN's high-order model; ``wild.py``: wild IR's three shuffled stages at
the GT size) run on whole batches on the training device between the loader and the method.
"""
