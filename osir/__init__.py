"""osir: an open-source image-restoration toolbox (IR-SDE, Refusion, DA-CLIP, OSEDiff, Real-ESRGAN
behind one registry, one options system, one engine and one metric suite)."""
__version__ = "0.1.0"
