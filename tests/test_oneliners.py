"""Issue 23.10: Real-ESRGAN x2 / x1 pixel-unshuffle the LQ by 2 / 4 (basicsr's ``pixel_unshuffle`` asserts
the size): an odd-sized image goes through ``osir restore``, ``osir test`` and the web page reflect-padded to
the multiple, the output cropped back to exactly scale x its size, pixel for pixel the network's output on the
manually padded image.

Issue 23.14 (NaN/Inf pretrained weights, a truncated safetensors file and a missing optional package are one
line each, exit code 2, no traceback, nothing written) are rows of ``tests/test_bad_input.py``'s ``CASES``.
"""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osir.core.checkpoint import save_network
from osir.methods.realesrgan import RealESRGAN, RRDBNet
from osir.core.registry import OptionsError
from osir.restore import main as restore_main
from osir.test import main as run_test_script
from tests.conftest import tiny_options, write_yaml

H, W = 33, 35          # odd in both directions (issue 23.10)


def _rrdbnet(scale, seed=0):
    """A tiny random RRDBNet (num_grow_ch 32, so that spandrel recognises the file), its output spread over
    (0.3, 0.9) so that clamping does not hide differences."""
    torch.manual_seed(seed)
    net = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=32, scale=scale).eval()
    with torch.no_grad():
        net.conv_last.weight.mul_(4)
        net.conv_last.bias.add_(0.6)
    return net


def _odd_image(path, seed=0):
    """A 33x35 8-bit BGR image of random pixels (every padded row / column differs from its neighbour)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (H, W, 3)).astype(np.uint8))
    return path


def _reference(net, bgr, multiple, mode="reflect"):
    """The network on the image padded at the bottom / right to ``multiple`` (``mode``), cropped back to
    scale x its size, rounded to 8 bits: RGB uint8."""
    x = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)).astype(np.float32) / 255)[None]
    ph, pw = -H % multiple, -W % multiple
    with torch.no_grad():
        out = net(F.pad(x, (0, pw, 0, ph), mode=mode))[..., :H * net.scale, :W * net.scale]
    return (out[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.mark.parametrize("scale, multiple", [(2, 2), (1, 4)])
def test_odd_size_through_osir_restore_is_reflect_padded_and_cropped_back(tmp_path, capsys, scale, multiple):
    net = _rrdbnet(scale)
    save_network(net, tmp_path / f"x{scale}.safetensors")
    image = _odd_image(tmp_path / "in" / "odd.png")
    assert restore_main(["--weights", str(tmp_path / f"x{scale}.safetensors"), str(image), "-o",
                         str(tmp_path / "out")]) == 0, capsys.readouterr().err[-2000:]
    out = cv2.imread(str(tmp_path / "out" / "odd.png"))[:, :, ::-1]
    assert out.shape == (scale * H, scale * W, 3)
    bgr = cv2.imread(str(image))
    assert np.array_equal(out, _reference(net, bgr, multiple))
    # the padding is reflect: replicate padding gives other pixels along the bottom / right border
    assert not np.array_equal(out, _reference(net, bgr, multiple, mode="replicate"))


def test_odd_size_through_osir_test(tmp_path, capsys):
    """test.py (the engine's iterate, as training's validation) pads and crops the same way."""
    net = _rrdbnet(2)
    save_network(net, tmp_path / "x2.safetensors")
    _odd_image(tmp_path / "lq" / "odd.png")
    opt = tiny_options(tmp_path)
    opt.pop("train")
    opt.update(name="odd", method={"type": "RealESRGAN", "scale": 2,
                                   "network": {"type": "RRDBNet", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 8,
                                               "num_block": 1, "num_grow_ch": 32, "scale": 2}},
               datasets={"real": {"type": "SingleImageDataset", "dataroot_lq": str(tmp_path / "lq")}}, metrics={})
    opt["path"]["pretrained"] = {"g": str(tmp_path / "x2.safetensors")}
    assert run_test_script(["-opt", str(write_yaml(tmp_path / "t.yml", opt))]) == 0, capsys.readouterr().err[-2000:]
    out = cv2.imread(str(tmp_path / "results" / "odd" / "real" / "odd.png"))[:, :, ::-1]
    assert out.shape == (2 * H, 2 * W, 3)
    assert np.array_equal(out, _reference(net, cv2.imread(str(tmp_path / "lq" / "odd.png")), 2))


def test_odd_size_through_the_web_page(tmp_path):
    """The page's restore (issue 23.10: it showed 'AppError:' with an empty message)."""
    pytest.importorskip("gradio")
    from osir.web import AUTO, Demo
    net = _rrdbnet(2)
    save_network(net, tmp_path / "x2.safetensors")
    image = _odd_image(tmp_path / "odd.png")
    (before, after), png, status = Demo([tmp_path / "x2.safetensors"]).restore(
        str(image), AUTO, str(tmp_path / "x2.safetensors"))
    assert after.shape == before.shape == (2 * H, 2 * W, 3)
    assert np.array_equal(after, _reference(net, cv2.imread(str(image)), 2))


def test_method_scale_must_match_the_network_scale():
    spec = {"type": "RRDBNet", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}
    with pytest.raises(OptionsError, match=r"^method\.scale: 4 differs from method\.network\.scale 2; "):
        RealESRGAN(network={**spec, "scale": 2}, scale=4)
