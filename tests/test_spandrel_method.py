"""Issue 27 point 6: any architecture spandrel loads restores through ``osir restore`` (the ``spandrel`` card,
method ``SpandrelModel``), ``--outscale`` (the network's output resized with OpenCV's Lanczos-4, as Real-ESRGAN's
``inference_realesrgan.py``), the default precision.  The networks are spandrel's own classes with random weights
in spandrel's layout (a SwinIR of one 12-channel block), saved as torch state dicts and safetensors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from osir.core.card import SizeRequirements
from osir.core.checkpoint import CheckpointError
from osir.core.recognition import NoMatch, detectors, recognize
from osir.restore import load_restorer, main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")


def _swinir(in_chans: int = 3, seed: int = 0):
    """spandrel's SwinIR (lightweight x2: ``pixelshuffledirect``), one block of 12 channels; the output convolution
    scaled down so that the random network's output spreads over (0, 1) instead of clamping to black / white."""
    from spandrel.architectures.SwinIR import SwinIR
    torch.manual_seed(seed)
    net = SwinIR(img_size=16, in_chans=in_chans, embed_dim=12, depths=[1], num_heads=[2], window_size=4, mlp_ratio=2,
                 upscale=2, upsampler="pixelshuffledirect").eval()
    with torch.no_grad():
        net.upsample[0].weight.mul_(0.3)
    return net


@pytest.fixture(scope="module")
def swinir(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("swinir")
    state = _swinir().state_dict()
    torch.save(state, folder / "swinir_x2.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "swinir_x2.safetensors")
    return {"pth": folder / "swinir_x2.pth", "safetensors": folder / "swinir_x2.safetensors"}


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 29 x 23 crop of skimage's astronaut (odd sides: 3.5 x 29 = 101.5, where int() and round() differ)."""
    import skimage.data
    image = np.ascontiguousarray(skimage.data.astronaut()[30:53, 180:209])
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(image).save(path)
    return path, image


def _spandrel_output(weights: Path, image: np.ndarray) -> np.ndarray:
    """The reference: spandrel's own loader and call on the image (float RGB HxWx3 in [0, 1])."""
    import spandrel
    descriptor = spandrel.ModelLoader().load_from_file(str(weights)).eval()
    x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    return descriptor(x)[0].permute(1, 2, 0).numpy()


# ----------------------------------------------------------------------------- recognition
@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_a_swinir_file_is_recognised_as_the_spandrel_method_with_its_descriptor(swinir, kind):
    found = recognize(swinir[kind])
    assert (found.method, found.arch, found.network, found.detector) == ("SpandrelModel", None, "g", "spandrel")
    hp = found.hyper_parameters
    assert (hp["architecture"], hp["purpose"], hp["scale"], hp["tiling"], hp["supports_fp16"]) == \
        ("SwinIR", "SR", 2, "discouraged", False)
    assert found.settings == {"weights": str(swinir[kind])}
    assert "fp16: not supported by SwinIR (spandrel); --precision fp16 runs it in fp32" in found.notes
    restorer = load_restorer(swinir[kind])
    assert (restorer.method, restorer.scale, restorer.tiling, restorer.precision) == ("SpandrelModel", 2, "discouraged",
                                                                                      "fp32")
    assert restorer.model.size_requirements == SizeRequirements(minimum=16, multiple_of=1)   # spandrel's for SwinIR
    assert restorer.sources == {"g": str(swinir[kind])}


def test_the_spandrel_detector_is_tried_last_and_rrdbnet_stays_with_realesrgan(tmp_path):
    """An RRDBNet file is one spandrel loads too (its ESRGAN); osir's Real-ESRGAN detector comes first."""
    from osir.core.checkpoint import read_weights_file
    from osir.methods.realesrgan import RRDBNet
    from osir.methods.spandrel.detect import spandrel_model
    assert detectors()[-1].function == "osir.methods.spandrel.detect:spandrel_model"
    assert all(d.priority > detectors()[-1].priority for d in detectors()[:-1])
    torch.manual_seed(0)
    path = tmp_path / "RealESRGAN_x4plus_tiny.pth"
    torch.save({"params_ema": RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=32, scale=4).state_dict()}, path)
    assert recognize(path).method == "RealESRGAN"
    alone = spandrel_model(read_weights_file(path), path)          # what the spandrel card alone would make of it
    assert (alone.method, alone.hyper_parameters["architecture"], alone.hyper_parameters["scale"]) == \
        ("SpandrelModel", "ESRGAN", 4)


def test_an_inpainting_model_is_refused_and_garbage_is_not_recognised(tmp_path, capsys):
    from spandrel.architectures.LaMa import LaMa
    from osir.methods.spandrel.detect import spandrel_model
    with pytest.raises(NoMatch, match=r"^spandrel loads a LaMa Inpainting model, which takes more than an image"):
        spandrel_model(LaMa().state_dict(), Path("lama.pth"))
    garbage = tmp_path / "garbage.pth"
    torch.save({"encoder.w": torch.zeros(3, 4), "decoder.b": torch.ones(2)}, garbage)
    with pytest.raises(CheckpointError, match="any architecture spandrel loads: spandrel recognises no architecture "
                                              "in these keys"):
        recognize(garbage)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert main([str(image), "--weights", str(garbage), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"osir restore: checkpoint error: '{garbage}': no known layout matches "
                                                "its 2 tensors"), err


# ----------------------------------------------------------------------------- osir restore --outscale
def test_restore_outscale_3_5_gives_spandrels_output_resized_with_lanczos4(swinir, photo, tmp_path):
    """The issue's check, as a user runs it (a subprocess): int(3.5 x side) (Real-ESRGAN's truncation), and the
    pixels of spandrel's own call resized with cv2.INTER_LANCZOS4, the call Real-ESRGAN's script makes."""
    path, image = photo
    out = tmp_path / "out.png"
    done = subprocess.run([sys.executable, "-m", "osir.restore", str(path), "--weights", str(swinir["pth"]),
                           "--outscale", "3.5", "-o", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"recognised '{swinir['pth']}' as SpandrelModel" in done.stderr
    result = np.asarray(Image.open(out).convert("RGB")).astype(int)
    h, w = image.shape[:2]
    assert result.shape == (int(3.5 * h), int(3.5 * w), 3) == (80, 101, 3)        # round() would give 102 columns
    network = _spandrel_output(swinir["pth"], image)
    assert network.std() > 0.05 and 0 < network.min() and network.max() < 1         # not clamped to black / white
    # Real-ESRGAN's order: the network output quantised to 8 bits, then resized (cv2 saturates the lobes)
    released = cv2.resize((network * 255.0).round().astype(np.uint8), (101, 80), interpolation=cv2.INTER_LANCZOS4)
    # osir resizes the float output, then quantises: the two differ by the 8-bit rounding only
    floating = np.clip(cv2.resize(network, (101, 80), interpolation=cv2.INTER_LANCZOS4), 0, 1)
    assert np.abs(result - (floating * 255.0).round()).max() == 0
    assert np.abs(result - released).max() <= 1 and np.abs(result - released).mean() < 0.5
    bicubic = cv2.resize(image, (101, 80), interpolation=cv2.INTER_CUBIC).astype(int)
    assert np.abs(result - bicubic).mean() > 10                                     # the network did run


def test_outscale_equal_to_the_scale_or_absent_is_the_network_output(swinir, photo):
    _, image = photo
    restorer = load_restorer(swinir["safetensors"])
    network = _spandrel_output(swinir["pth"], image)
    for outscale in (None, 2, 2.0):
        np.testing.assert_allclose(restorer.restore(image, outscale=outscale), network, atol=1e-6)
    assert restorer.restore(image, outscale=0.5).shape == (11, 14, 3)             # int(0.5 x 23), int(0.5 x 29)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_bad_outscale_is_one_line(value, photo, swinir, tmp_path, capsys):
    path, _ = photo
    assert main([str(path), "--weights", str(swinir["pth"]), "--outscale", value, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"osir restore: options error: --outscale must be a number above 0 (the output size over the input " \
                  f"size), got {float(value):g}"
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- grey networks, precision
def test_a_grey_network_is_fed_the_bt601_luma_and_its_output_repeated(tmp_path, photo):
    _, image = photo
    path = tmp_path / "swinir_grey.safetensors"
    save_file({k: v.contiguous() for k, v in _swinir(in_chans=1, seed=1).state_dict().items()}, path)
    restorer = load_restorer(path)
    assert recognize(path).hyper_parameters["input_channels"] == 1
    out = restorer.restore(image)
    luma = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2GRAY)     # OpenCV's BT.601 weights, in float
    import spandrel
    descriptor = spandrel.ModelLoader().load_from_file(str(path)).eval()
    expected = descriptor(torch.from_numpy(luma)[None, None])[0, 0].numpy()
    assert out.shape == (46, 58, 3)
    for c in range(3):
        np.testing.assert_allclose(out[:, :, c], expected, atol=2e-6)


def test_the_default_precision_is_fp16_on_cuda_and_a_network_without_fp16_runs_fp32(swinir):
    from osir.restore import default_precision
    assert default_precision(torch.device("cuda")) == "fp16" and default_precision(torch.device("cuda:1")) == "fp16"
    assert default_precision(torch.device("cpu")) == "fp32"
    # on CUDA: the releases' own precision, fp16 for feed-forward and one-step methods, fp32 for step samplers
    cuda = torch.device("cuda")
    assert [default_precision(cuda, m) for m in ("SpandrelModel", "RealESRGAN", "OSEDiff", "RefusionCompression")] \
        == ["fp16"] * 4
    assert [default_precision(cuda, m) for m in ("IRSDE", "Refusion", "LatentRefusion", "DACLIPUIR")] == ["fp32"] * 4
    assert default_precision(cpu := torch.device("cpu"), "OSEDiff") == "fp32" and default_precision(cpu, "IRSDE") == "fp32"
    from osir.restore import build_parser
    assert build_parser().parse_args(["x", "-o", "y"]).precision is None            # resolved per device
    from osir.methods.spandrel import SpandrelModel
    method = SpandrelModel(str(swinir["pth"]))
    method.setup(torch.device("cpu"), "fp16")                                       # SwinIR: supports_half False
    assert method.inference_notes == ["note: SwinIR does not support fp16 (spandrel's descriptor): it runs in fp32"]
    with method.autocast():
        assert not torch.is_autocast_enabled("cpu")
    method.setup(torch.device("cpu"), "bf16")                                       # supported: autocast as usual
    assert method.inference_notes == []
    with method.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_the_method_is_inference_only(swinir):
    from osir.core.registry import OptionsError
    from osir.methods.spandrel import SpandrelModel
    with pytest.raises(OptionsError, match="runs spandrel's SwinIR for inference only"):
        SpandrelModel(str(swinir["pth"])).prepare_training()
    with pytest.raises(CheckpointError, match=r"method.weights: weights file not found: 'missing.pth'"):
        SpandrelModel("missing.pth")
