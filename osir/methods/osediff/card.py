"""OSEDiff's card (Wu et al., "One-Step Effective Diffusion Network for Real-World Image Super-Resolution",
NeurIPS 2024): the release, detection of osediff.pkl, size contract.  See ``osir.core.card``."""
from osir.core.card import CARDS, Detector, MethodCard, Release, ReleaseFile, SizeRequirements, Tiling

#: the files of the release (also the path markers of ``OSEDiff``'s arguments, ``osir.core.files``)
RELEASE_FILE = ReleaseFile("method.release_path", "osediff.pkl", "the Google Drive link in github.com/cswry/OSEDiff "
                           "(preset/models/osediff.pkl)", "OSEDiff's LoRA weights")
SD_FOLDER = ReleaseFile("method.sd_path", "stable-diffusion-2-1-base", "huggingface.co/stabilityai/stable-diffusion-2-1-base",
                        "a local diffusers Stable Diffusion 2.1-base folder")
LPIPS_FILES = (ReleaseFile("method.lpips_weights_path", "LPIPS_v0.1_vgg-a78928a0.pth",
                           "huggingface.co/chaofengc/IQA-PyTorch-Weights (pyiqa's weights)", "pyiqa's LPIPS-VGG weights"),
               ReleaseFile("method.lpips_vgg_path", "vgg16-397923af.pth", "download.pytorch.org/models/ (torchvision's "
                           "VGG16_Weights.IMAGENET1K_V1)", "torchvision's ImageNet VGG16 (LPIPS's backbone)"))
RAM_FILE = ReleaseFile("method.prompt.ram_path", "ram_swin_large_14m.pth", "huggingface.co/xinyu1205/recognize-anything",
                       "Recognize Anything's tagger (RAM Swin-L)")
DAPE_FILE = ReleaseFile("method.prompt.dape_path", "DAPE.pth", "the Google Drive link in github.com/cswry/OSEDiff "
                        "(preset/models/DAPE.pth)", "OSEDiff's degradation-aware prompt LoRA (DAPE)")

CARD = CARDS.register(MethodCard(
    name="osediff",
    title="OSEDiff",
    package=__package__,
    methods=("OSEDiff",),
    standin="osir.methods.osediff.standin:standins",
    noise_network="unet",
    releases=(
        Release("osediff", "OSEDiff x4 one-step real-world SR (osediff.pkl; needs method.sd_path, SD 2.1-base folder)",
                "osediff.yml",
                RELEASE_FILE, needs=(SD_FOLDER,),
                verified="release layout from ../shared/checkpoints/osediff_pkl.json (tests/test_osediff_parts.py)"),
    ),
    detectors=(Detector("OSEDiff (osediff.pkl)", "osir.methods.osediff.detect:osediff_pkl", payload=True),),
    not_exportable={"OSEDiff": "OSEDiff is Stable Diffusion 2.1 (VAE, LoRA U-Net, text encoder and prompt tagger), "
                               "not one feed-forward osir network"},
    size=SizeRequirements(multiple_of=16),     # SD 2.1-base: VAE x8 and UNet x8 latent multiple, over the x4 scale
    tiling=Tiling.INTERNAL,
), name="osediff")
