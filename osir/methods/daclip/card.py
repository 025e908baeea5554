"""DA-CLIP's card (Luo et al., "Controlling Vision-Language Models for Multi-Task Image Restoration",
ICLR 2024): universal and wild restoration releases, weight detection, samplers.  See ``osir.core.card``."""
from osir.core.card import CARDS, FEED_FORWARD, Detector, MethodCard, Release, ReleaseFile, Sampling, Tiling

PAGE = "huggingface.co/weblzw/daclip-uir-ViT-B-32-irsde (also Google Drive, linked from github.com/Algolzw/daclip-uir)"
WHY_NOT_EXPORTED = ("DA-CLIP universal IR's noise network needs the DA-CLIP encoder's degradation and content "
                    "embeddings at every step")

CARD = CARDS.register(MethodCard(
    name="daclip",
    title="DA-CLIP",
    package=__package__,
    methods=("DACLIP", "DACLIPUIR"),
    standin="osir.methods.daclip.standin:standins",
    noise_network="g",
    releases=(
        Release("daclip-uir", "DA-CLIP universal restoration, ten degradation types (needs method.daclip_path)",
                "daclip-uir.yml", ReleaseFile("g", "universal-ir.pth", PAGE, "the universal IR noise network"),
                needs=(ReleaseFile("method.daclip_path", "daclip_ViT-B-32.pt", PAGE,
                                   "the DA-CLIP weights (or a stage-1 run's net_daclip_*.safetensors)"),)),
        Release("wild-ir", "DA-CLIP wild image restoration, ViT-L/14 (20 posterior steps; needs method.daclip_path)",
                "wild-ir.yml", ReleaseFile("g", "wild-ir.pth", PAGE, "the wild IR noise network"),
                needs=(ReleaseFile("method.daclip_path", "wild-daclip_ViT-L-14.pt", PAGE,
                                   "the wild DA-CLIP weights"),)),
    ),
    detectors=(Detector("DACLIPUNet (DA-CLIP universal / wild IR)", "osir.methods.daclip.detect:daclip_unet"),
               Detector("DA-CLIP ViT", "osir.methods.daclip.detect:daclip_vit")),
    not_exportable={"DACLIP": "the DA-CLIP ViT is an image/text encoder pair, not a restoration network",
                    "DACLIPUIR": WHY_NOT_EXPORTED, "DACLIPUNet": WHY_NOT_EXPORTED},
    tiling=Tiling.DISCOURAGED,
    sampling=Sampling(samplers=None, steps=True),
    method_sampling={"DACLIP": FEED_FORWARD},
), name="daclip")
