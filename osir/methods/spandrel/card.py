"""The card of ``SpandrelModel``: any weights file spandrel (github.com/chaiNNer-org/spandrel) loads as an
image-to-image model restores through ``osir restore`` / ``osir web``.  See ``osir.core.card``.

Its detector has the lowest priority of all cards, so a file one of osir's own methods recognises (an
RRDBNet: Real-ESRGAN; a conditional NAFNet: Refusion; ...) keeps going to that method.  The size contract and
the tiling are per file, not per card: the method reads them from spandrel's descriptor (``scale``,
``size_requirements``, ``tiling``), so the card's ``size`` and ``tiling`` are the neutral values.  No
releases (no ``--model`` name): the weights alone say what they are.  Plain data: importing it imports no
torch."""
from osir.core.card import CARDS, FEED_FORWARD, Detector, MethodCard, SizeRequirements, Tiling

CARD = CARDS.register(MethodCard(
    name="spandrel",
    title="spandrel (any architecture it loads)",
    package=__package__,
    methods=("SpandrelModel",),
    # payload: spandrel unwraps the file's containers itself (params_ema, params-ema, model, net, netG., ...);
    # priority -1: after every osir detector (whose priority is 0 or more)
    detectors=(Detector("any architecture spandrel loads", "osir.methods.spandrel.detect:spandrel_model",
                        payload=True, priority=-1),),
    not_exportable={"SpandrelModel": "spandrel's architectures are run as spandrel builds them (inference only); "
                                     "osir exports the networks of its own methods"},
    size=SizeRequirements(),          # per file: SpandrelModel.size_requirements (spandrel's descriptor)
    tiling=Tiling.SUPPORTED,          # per file: SpandrelModel.tiling (spandrel's descriptor)
    sampling=FEED_FORWARD,
), name="spandrel")
