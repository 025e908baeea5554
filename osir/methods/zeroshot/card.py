"""The card of ``ZeroShot`` (zero-shot restoration with an unconditional diffusion prior, issue 25): the method's
sampling (the registered zero-shot samplers, steps per call), what cannot be exported, and the two released
priors as ``--model`` names (DPS's ``ffhq_10m.pt``, guided-diffusion's ``256x256_diffusion_uncond.pt``: their
file names, pages and constructors are ``adm.ADM_RELEASES``'s, repeated here as plain text), also recognised from
their keys (``detect.py``: ``osir restore --weights ffhq_10m.pt``) or given as ``method.prior_path`` in an
options file.  Plain data: importing it imports no torch."""
from osir.core.card import (CARDS, Detector, MethodCard, OptionFlag, Release, ReleaseFile, Sampling, SizeRequirements,
                            Tiling)

#: the registered zero-shot samplers (``ZERO_SHOT_SAMPLERS``)
SAMPLERS = ("ddrm", "ddnm", "dps", "pigdm", "diffpir", "tds")

CARD = CARDS.register(MethodCard(
    name="zeroshot",
    title="ZeroShot",
    package=__package__,
    methods=("ZeroShot",),
    noise_network="prior",
    releases=(
        Release("zeroshot-ffhq256", "zero-shot restoration with DPS's ADM FFHQ 256 prior (ffhq_10m.pt)",
                "zeroshot-ffhq256.yml",
                ReleaseFile("prior", "ffhq_10m.pt", "the Google Drive folder linked from "
                            "github.com/DPS2022/diffusion-posterior-sampling", "DPS's ADM FFHQ 256x256 prior"),
                size=SizeRequirements(multiple_of=8),     # the U-Net's 32 over the preset's x4 task
                verified="network from the release's key layout (tests/test_zeroshot_adm.py); sampling settings "
                         "are osir's (the weights hold none)"),
        Release("zeroshot-imagenet256", "zero-shot restoration with guided-diffusion's ADM ImageNet 256 "
                "unconditional prior (256x256_diffusion_uncond.pt)", "zeroshot-imagenet256.yml",
                ReleaseFile("prior", "256x256_diffusion_uncond.pt", "openaipublic.blob.core.windows.net/diffusion/"
                            "jul-2021/ (linked from github.com/openai/guided-diffusion)",
                            "guided-diffusion's ADM ImageNet 256x256 unconditional prior"),
                size=SizeRequirements(multiple_of=8),
                verified="network from the release's key layout (tests/test_zeroshot_adm.py); sampling settings "
                         "are osir's (the weights hold none)"),
    ),
    flags=(OptionFlag("--prior", "weights", "a diffusion prior file (an ADM release such as ffhq_10m.pt, or osir "
                                              "safetensors); the same as --weights"),
           OptionFlag("--task", "method.task", "the zero-shot degradation (method.task: denoise, sr2_bicubic, "
                      "sr2_pool, sr4_bicubic, sr4_pool, gaussian_blur, motion_blur, inpaint_box, inpaint_random, "
                      "colorize; short: sr2, sr4 = bicubic as DPS and DDRM, deblur = gaussian_blur, inpaint = "
                      "inpaint_box)",
                      aliases={"sr2": "sr2_bicubic", "sr4": "sr4_bicubic", "deblur": "gaussian_blur",
                               "inpaint": "inpaint_box"})),
    detectors=(Detector("ADM prior (DPS FFHQ 256, guided-diffusion ImageNet 256)",
                        "osir.methods.zeroshot.detect:adm_prior"),),
    not_exportable={"ZeroShot": "a zero-shot sampler runs the prior tens to hundreds of times with the operator's "
                                "algebra between calls (and autograd for DPS): not one feed-forward graph"},
    size=SizeRequirements(),             # per instance: the prior's size multiple over the task's scale
    tiling=Tiling.DISCOURAGED,           # the operator (a mask, a blur) acts on the whole image
    sampling=Sampling(samplers=SAMPLERS, steps=True),
), name="zeroshot")
