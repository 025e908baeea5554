"""OSEDiff's tiling: the shared-statistics tiled VAE against the whole-image pass (and diffusers' per-tile
VAE tiling, which cannot meet the same tolerance), and the latent UNet's tiles against the release's
rules (area threshold, square tiles flush with the end, Gaussian weights)."""
import math

import pytest
import torch
from diffusers import AutoencoderKL

from osir.methods.osediff import latent_tiles, tiled_vae

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def vae():
    """SD's VAE architecture, small and random: three levels (two down- and upsamplers), channel changes
    (shortcut convolutions), mid-block attention, and random GroupNorm affines so that every norm
    matters."""
    torch.manual_seed(0)
    net = AutoencoderKL(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    return net


def smooth_images(batch: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, h // 8, w // 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)


def diffusers_tiled(vae, tile_pixels: int):
    """diffusers' own VAE tiling with tiles of ``tile_pixels`` image pixels (1/4 overlap, blended)."""
    vae.enable_tiling()
    vae.tile_sample_min_size = tile_pixels
    vae.tile_latent_min_size = tile_pixels // 4
    return vae


def test_tiled_decode_equals_the_whole_decode_and_diffusers_tiling_does_not(vae):
    torch.manual_seed(1)
    z = torch.randn(2, 4, 24, 20)                          # two images: statistics are per image
    with torch.no_grad():
        whole = vae.decode(z).sample
        tiled = tiled_vae.decode(vae, z, limit=8)          # 3 x 3 tiles of about 8 latents
        assert tiled.shape == whole.shape == (2, 3, 96, 80)
        assert (tiled - whole).abs().max() <= TOLERANCE
        try:
            per_tile = diffusers_tiled(vae, 32).decode(z).sample
        finally:
            vae.disable_tiling()
    assert (per_tile - whole).abs().max() > 100 * TOLERANCE      # the test tells per-tile norms apart


def test_tiled_encode_equals_the_whole_encode_and_diffusers_tiling_does_not(vae):
    x = smooth_images(2, 64, 48)
    with torch.no_grad():
        whole = vae.encode(x).latent_dist
        tiled = tiled_vae.encode(vae, x, limit=24)           # 3 x 2 tiles, boundaries on the 4-pixel grid
        for a, b in ((tiled.mean, whole.mean), (tiled.logvar, whole.logvar)):
            assert a.shape == b.shape == (2, 4, 16, 12) and (a - b).abs().max() <= TOLERANCE
        try:
            per_tile = diffusers_tiled(vae, 32).encode(x).latent_dist.mean
        finally:
            vae.disable_tiling()
    assert (per_tile - whole.mean).abs().max() > 100 * TOLERANCE


def test_images_within_the_limit_run_whole_and_odd_sizes_are_refused(vae):
    x = smooth_images(1, 48, 40)
    with torch.no_grad():
        assert torch.equal(tiled_vae.run(vae.encoder, x, 48, decoder=False), vae.encoder(x))
        with pytest.raises(ValueError, match=r"tiled VAE encoder: the image sides \(42 x 40\) must be multiples of 4"):
            tiled_vae.run(vae.encoder, x[..., :42, :], 16, decoder=False)


def test_pooled_group_statistics_are_the_whole_maps():
    """Chan's combination of per-tile means and variances gives the whole map's GroupNorm output."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 10, 14) * 3 + torch.linspace(-5, 5, 14)        # tiles with different means
    norm = torch.nn.GroupNorm(4, 8, eps=1e-6)
    stats = tiled_vae.GroupStats(4)
    for y0, y1 in tiled_vae.cuts(10, 4):
        for x0, x1 in tiled_vae.cuts(14, 5):
            stats.add(x[..., y0:y1, x0:x1])
    assert stats.count == 2 * 140                                           # two channels a group
    assert torch.allclose(stats.normalise(x, norm), norm(x), atol=1e-5)
    assert tiled_vae.cuts(1096, 1088, 8) == [(0, 544), (544, 1096)]
    assert tiled_vae.cuts(40, 12) == [(0, 10), (10, 20), (20, 30), (30, 40)]


# -- the latent UNet's tiles --------------------------------------------------------------------------
def test_latent_tile_starts_follow_the_release():
    """Starts k (T - overlap) while the tile ends inside, then one flush with the end (length - T)."""
    assert latent_tiles.starts(96, 96, 32) == [0]
    assert latent_tiles.starts(100, 96, 32) == [0, 4]
    assert latent_tiles.starts(200, 96, 32) == [0, 64, 104]
    assert latent_tiles.starts(200, 64, 32) == [0, 32, 64, 96, 128, 136]


class OneHotPerTile:
    """A noise predictor whose output for the k-th tile is the unit vector e_k in the channels: the
    blended result's channel k is tile k's normalised weight."""

    def __init__(self):
        self.shapes = []

    def __call__(self, latent):
        k = len(self.shapes)
        self.shapes.append(tuple(latent.shape[-2:]))
        out = torch.zeros_like(latent)
        if k < out.shape[1]:
            out[:, k] = 1
        return out


def test_latent_tiles_blend_with_the_releases_gaussian_weights():
    """100 x 100 latents (over 96^2): four 96-tiles at rows / columns {0, 4}.  Tile weights are
    exp(-(y - T/2)^2 / (0.02 T^2)) for rows and exp(-(x - (T-1)/2)^2 / (0.02 T^2)) for columns, so at
    row 50 the two row tiles (local rows 50 and 46, both 2 from T/2) weigh the same, while at column
    50 (local columns 50 and 46: 2.5 and 1.5 from (T-1)/2) the second tile weighs more."""
    predict = OneHotPerTile()
    out = latent_tiles.predict_tiled(predict, torch.zeros(1, 4, 100, 100), tile=96, overlap=32)
    assert predict.shapes == [(96, 96)] * 4                          # tiles (row 0, col 0), (0, 4), (4, 0), (4, 4)
    assert torch.allclose(out.sum(1), torch.ones(1, 100, 100))
    assert torch.equal(out[0, :, 1, 1], torch.tensor([1.0, 0, 0, 0]))   # only the first tile covers (1, 1)
    assert torch.allclose(out[0, :, 50, 2], torch.tensor([0.5, 0, 0.5, 0]), atol=1e-6)
    left, right = (math.exp(-d ** 2 / (0.02 * 96 ** 2)) for d in (2.5, 1.5))
    assert torch.allclose(out[0, :, 2, 50], torch.tensor([left, right, 0, 0]) / (left + right), atol=1e-6)


def test_latents_within_the_tile_area_run_whole_and_thin_ones_use_square_tiles():
    predict = OneHotPerTile()
    latent_tiles.predict_tiled(predict, torch.zeros(1, 4, 128, 64), tile=96, overlap=32)
    assert predict.shapes == [(128, 64)]                             # 8192 <= 96^2: whole, though 128 > 96
    predict = OneHotPerTile()
    latent_tiles.predict_tiled(predict, torch.zeros(1, 4, 64, 200), tile=96, overlap=32)
    assert predict.shapes == [(64, 64)] * 6                          # side min(96, 64, 200), starts 0..136
