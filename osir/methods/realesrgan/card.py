"""Real-ESRGAN's card (Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure
Synthetic Data", ICCVW 2021): releases, weight detection, export, size contract.  See ``osir.core.card``."""
from osir.core.card import CARDS, Detector, ExportName, MethodCard, Release, ReleaseFile, SizeRequirements, Tiling

PAGE = "github.com/xinntao/Real-ESRGAN/releases"


def _weights(file: str, what: str) -> ReleaseFile:
    return ReleaseFile("g", file, PAGE, what)


CARD = CARDS.register(MethodCard(
    name="realesrgan",
    title="Real-ESRGAN",
    package=__package__,
    methods=("RealESRGAN",),
    standin="osir.methods.realesrgan.standin:standins",
    noise_network="g",
    releases=(
        Release("realesrgan-x4", "Real-ESRGAN x4 super-resolution (RRDBNet; RealESRGAN_x4plus.pth or an osir run)",
                "realesrgan-x4.yml", _weights("RealESRGAN_x4plus.pth", "the Real-ESRGAN x4 generator"),
                verified="network from the release's key layout (tests/test_recognize.py)"),
        Release("realesrgan-x2", "Real-ESRGAN x2 super-resolution (RRDBNet x2; RealESRGAN_x2plus.pth)",
                "realesrgan-x2.yml", _weights("RealESRGAN_x2plus.pth", "the Real-ESRGAN x2 generator"),
                size=SizeRequirements(multiple_of=2),
                verified="network from the release's key layout (tests/test_recognize.py)"),
        Release("realesrnet-x4", "Real-ESRNet x4 super-resolution (RRDBNet, L1 only; RealESRNet_x4plus.pth)",
                "realesrnet-x4.yml", _weights("RealESRNet_x4plus.pth", "the Real-ESRNet x4 generator"),
                verified="network from the release's key layout (tests/test_recognize.py)"),
    ),
    detectors=(Detector("RRDBNet (spandrel)", "osir.methods.realesrgan.detect:rrdbnet", priority=2),),
    exports={"RRDBNet": "osir.methods.realesrgan.onnx:graphs"},
    export_names=(ExportName("realesrgan", "realesrgan-x4"), ExportName("realesrnet", "realesrnet-x4")),
    tiling=Tiling.SUPPORTED,
), name="realesrgan")
