"""OSEDiff's colour corrections against their defining properties."""
import torch

from osir.methods.osediff.color import adain, wavelet, wavelet_split


def test_adain_gives_each_channel_the_lq_mean_and_std():
    torch.manual_seed(0)
    lq = torch.rand(2, 3, 16, 20)
    out = 2.0 * torch.rand(2, 3, 16, 20) + 0.3
    fixed = adain(out, lq)
    assert torch.allclose(fixed.mean((2, 3)), lq.mean((2, 3)), atol=1e-5)
    assert torch.allclose(fixed.flatten(2).std(-1), lq.flatten(2).std(-1), atol=1e-4)
    assert torch.allclose(adain(3.0 * lq - 0.5, lq), lq, atol=1e-4)          # a per-channel affine change undone


def test_wavelet_keeps_details_and_takes_the_lq_low_frequencies():
    torch.manual_seed(0)
    lq = torch.rand(1, 3, 32, 32)
    high, low = wavelet_split(lq)
    assert torch.allclose(high + low, lq, atol=1e-6)
    assert low.std() < lq.std() / 2                                          # the residual is smooth
    assert torch.allclose(wavelet(lq + 0.2, lq), lq, atol=1e-5)               # a colour shift is removed
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    details = 0.1 * (-1.0) ** (yy + xx).float()                              # a zero-mean checkerboard
    kept = wavelet(lq + details, lq) - lq
    assert float((kept - details).abs().mean()) < 0.05 * float(details.abs().mean())   # fine detail survives
