"""The card of ``ZeroShot`` (zero-shot restoration with an unconditional diffusion prior, issue 25): the method's
sampling (the registered zero-shot samplers, steps per call) and what cannot be exported.  No releases yet (no
``--model`` name): a released prior (DPS's ``ffhq_10m.pt``, guided-diffusion's ``256x256_diffusion_uncond.pt``,
``adm.ADM_RELEASES``) is recognised from its keys (``detect.py``: ``osir restore --weights ffhq_10m.pt``) or given
as ``method.prior_path`` in an options file.  Plain data: importing it imports no torch."""
from osir.core.card import CARDS, Detector, MethodCard, Sampling, SizeRequirements, Tiling

#: the registered zero-shot samplers (``ZERO_SHOT_SAMPLERS``)
SAMPLERS = ("ddrm", "ddnm", "dps", "pigdm", "diffpir", "tds")

CARD = CARDS.register(MethodCard(
    name="zeroshot",
    title="ZeroShot",
    package=__package__,
    methods=("ZeroShot",),
    noise_network="prior",
    detectors=(Detector("ADM prior (DPS FFHQ 256, guided-diffusion ImageNet 256)", "osir.methods.zeroshot.detect:adm_prior"),),
    not_exportable={"ZeroShot": "a zero-shot sampler runs the prior tens to hundreds of times with the operator's "
                                "algebra between calls (and autograd for DPS): not one feed-forward graph"},
    size=SizeRequirements(),             # per instance: the prior's size multiple over the task's scale
    tiling=Tiling.DISCOURAGED,           # the operator (a mask, a blur) acts on the whole image
    sampling=Sampling(samplers=SAMPLERS, steps=True),
), name="zeroshot")
