"""IR-SDE (Luo et al., ICML 2023): mean-reverting SDE image restoration."""
from osir.methods.irsde.arch import ConditionalUNet  # noqa: F401
from osir.methods.irsde.method import IRSDE  # noqa: F401
