"""The mean-reverting SDE and its samplers (shared by IR-SDE, Refusion and DA-CLIP-guided IR)."""
from osir.diffusion.sde import MeanRevertingSDE  # noqa: F401
from osir.diffusion import samplers  # noqa: F401  (registers the samplers)
