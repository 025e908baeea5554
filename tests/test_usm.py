"""Separable USM sharpening equals basicsr's 2-D USMSharp."""
import torch

from osir._compat import basicsr  # noqa: F401
from basicsr.utils.img_process_util import USMSharp

from osir.degradations.usm import SeparableUSMSharp


def test_separable_usm_matches_basicsr():
    torch.manual_seed(0)
    img = torch.nn.functional.interpolate(torch.rand(2, 3, 12, 12), size=72, mode="bicubic").clamp(0, 1)
    ours, ref = SeparableUSMSharp(), USMSharp()
    assert torch.allclose(ours.blur(img), torch.nn.functional.conv2d(
        torch.nn.functional.pad(img.view(6, 1, 72, 72), (25,) * 4, mode="reflect"), ref.kernel[None]).view(2, 3, 72, 72),
        atol=1e-5)
    out, expected = ours(img), ref(img)
    assert (out - expected).abs().max() < 1e-5
    assert (out - img).abs().max() > 1e-3                      # it does sharpen
    assert torch.allclose(ours(img, weight=0.8, threshold=5), ref(img, weight=0.8, threshold=5), atol=1e-5)
