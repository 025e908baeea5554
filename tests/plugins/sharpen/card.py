"""The plugin's card (``osir.core.card.MethodCard``): one release ``sharpen-x1``, one detector, the ONNX
graph of ``SharpenNet``.  Plain data: importing it imports no torch."""
from osir.core.card import (CARDS, FEED_FORWARD, Detector, MethodCard, Release, ReleaseFile, SizeRequirements,
                            Tiling)

CARD = CARDS.register(MethodCard(
    name="sharpen",
    title="Sharpen (test plugin)",
    package=__package__,
    methods=("Sharpen",),
    releases=(
        Release("sharpen-x1", "Sharpen x1 (SharpenNet; a test plugin's network, trained by osir)", "sharpen-x1.yml",
                ReleaseFile("g", "net_g_latest.safetensors", "an osir run's models/ folder", "the SharpenNet weights"),
                verified="no authors' release: the plugin is osir's own test method"),
    ),
    detectors=(Detector("SharpenNet (test plugin)", "tests.plugins.sharpen.detect:sharpen_net"),),
    exports={"SharpenNet": "tests.plugins.sharpen.onnx:graphs"},
    size=SizeRequirements(),
    tiling=Tiling.SUPPORTED,
    sampling=FEED_FORWARD,
), name="sharpen")
