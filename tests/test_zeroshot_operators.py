"""Degradation operators of the zero-shot samplers (osir/methods/zeroshot/operators.py), on tiny float64 images.

Every operator is checked against its explicit matrix (built by applying it to the identity basis): adjoint,
SVD (U diag(s) V^T = A, orthonormal U and V, singular values = those of the explicit matrix), pseudo-inverse
(= the minimum-norm least-squares solution of torch.linalg.lstsq) and the proximal step (normal equations).
The concrete operators are compared with independent references: torch's avg_pool2d, torch/PIL antialiased
bicubic, DDRM's bicubic tap formula, an explicit circular-convolution sum and scipy's wrap convolution."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osir.methods.zeroshot.operators import (OPERATORS, Blur, Colorization, Identity, Inpainting, LinearOperator,
                                             NonLinear, SuperResolutionBicubic, SuperResolutionPool, bicubic_matrix,
                                             gaussian_kernel, keys_cubic, motion_kernel)

D = torch.float64
GOLDEN = -1 / (2 * math.cos(2 * math.pi / 5))


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cases():
    """(name, operator, input shape [C, H, W]): odd/even and non-square sizes, asymmetric kernels."""
    return [
        ("identity", Identity((3, 4, 4)), (3, 4, 4)),
        ("inpaint_random", Inpainting.random_pixels((3, 4, 4), 0.5, generator(1)), (3, 4, 4)),
        ("inpaint_box", Inpainting.box((2, 5, 6), (1, 2, 3, 2)), (2, 5, 6)),
        ("colorize", Colorization((3, 4, 4)), (3, 4, 4)),
        ("colorize_luma", Colorization((3, 3, 4), weights=(0.299, 0.587, 0.114)), (3, 3, 4)),
        ("pool2", SuperResolutionPool(2, (3, 8, 8)), (3, 8, 8)),
        ("pool4", SuperResolutionPool(4, (1, 8, 12)), (1, 8, 12)),
        ("bicubic2", SuperResolutionBicubic(2, (2, 8, 12)), (2, 8, 12)),
        ("bicubic3", SuperResolutionBicubic(3, (1, 9, 6)), (1, 9, 6)),
        ("bicubic4", SuperResolutionBicubic(4, (1, 16, 8)), (1, 16, 8)),
        ("blur_motion", Blur(motion_kernel(5, 0.5, generator(2)), (2, 5, 6)), (2, 5, 6)),
        ("blur_random", Blur(torch.rand(3, 4, generator=generator(3), dtype=D), (1, 6, 7)), (1, 6, 7)),
        ("blur_gauss", Blur(gaussian_kernel(5, 1.0), (1, 8, 8)), (1, 8, 8)),
        ("blur_singular", Blur(torch.tensor([[0.5, 0.5]], dtype=D), (1, 4, 6)), (1, 4, 6)),   # K = 0 at Nyquist
        # K(+-1/5) = 1 + 2c cos(2 pi / 5) = 0 up to rounding (|K| = 2e-16): pinv must treat it as zero, as lstsq does
        ("blur_near_singular", Blur(torch.tensor([[GOLDEN, 1.0, GOLDEN]], dtype=D), (1, 4, 5)), (1, 4, 5)),
    ]


CASES = cases()
IDS = [name for name, _, _ in CASES]


def explicit_matrix(op, shape) -> torch.Tensor:
    n = math.prod(shape)
    basis = torch.eye(n, dtype=D).reshape(n, *shape)
    return op.forward(basis).reshape(n, -1).T


def random_pair(op, shape, seed=0):
    g = generator(seed)
    x = torch.randn(2, *shape, generator=g, dtype=D)
    y = torch.randn(op.forward(x).shape, generator=g, dtype=D)
    return x, y


@pytest.mark.parametrize("name, op, shape", CASES, ids=IDS)
def test_adjoint(name, op, shape):
    """<A x, y> = <x, A^T y>, and A^T is the transpose of the explicit matrix."""
    x, y = random_pair(op, shape)
    lhs = (op.forward(x) * y).sum(dim=(1, 2, 3))
    rhs = (x * op.adjoint(y)).sum(dim=(1, 2, 3))
    assert torch.allclose(lhs, rhs, rtol=0, atol=1e-10)
    matrix = explicit_matrix(op, shape)
    assert torch.allclose(op.adjoint(y).reshape(2, -1), y.reshape(2, -1) @ matrix, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, op, shape", CASES, ids=IDS)
def test_svd_reproduces_the_operator(name, op, shape):
    """U diag(s) V^T x = A x and V diag(s) U^T y = A^T y; the kept singular values padded with zeros are the
    singular values of the explicit matrix."""
    x, y = random_pair(op, shape)
    s = op.singulars()
    k = s.numel()
    assert op.vt(x).shape == (2, op.input_dim) and op.ut(y).shape == (2, op.output_dim)
    through_svd = op.u(op._pad(s * op.vt(x)[:, :k], op.output_dim))
    assert torch.allclose(through_svd, op.forward(x), rtol=0, atol=1e-10)
    adjoint_through_svd = op.v(op._pad(s * op.ut(y)[:, :k], op.input_dim))
    assert torch.allclose(adjoint_through_svd, op.adjoint(y), rtol=0, atol=1e-10)
    matrix = explicit_matrix(op, shape)
    expected = torch.linalg.svdvals(matrix)
    ours = torch.sort(torch.cat([s, s.new_zeros(expected.numel() - k)]), descending=True).values
    assert torch.allclose(ours, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name, op, shape", CASES, ids=IDS)
def test_u_and_v_are_orthogonal(name, op, shape):
    """||V^T x|| = ||x||, V V^T = I, and the explicit V (and U) has orthonormal columns."""
    x, y = random_pair(op, shape)
    assert torch.allclose(op.vt(x).norm(dim=1), x.reshape(2, -1).norm(dim=1), rtol=1e-12, atol=0)
    assert torch.allclose(op.ut(y).norm(dim=1), y.reshape(2, -1).norm(dim=1), rtol=1e-12, atol=0)
    assert torch.allclose(op.v(op.vt(x)), x, rtol=0, atol=1e-12)
    assert torch.allclose(op.u(op.ut(y)), y, rtol=0, atol=1e-12)
    v_matrix = op.v(torch.eye(op.input_dim, dtype=D)).reshape(op.input_dim, -1)   # row i = V e_i
    u_matrix = op.u(torch.eye(op.output_dim, dtype=D)).reshape(op.output_dim, -1)
    assert torch.allclose(v_matrix @ v_matrix.T, torch.eye(op.input_dim, dtype=D), rtol=0, atol=1e-12)
    assert torch.allclose(u_matrix @ u_matrix.T, torch.eye(op.output_dim, dtype=D), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, op, shape", CASES, ids=IDS)
def test_pseudo_inverse(name, op, shape):
    """A A^+ A x = A x; A^+ y = the minimum-norm least-squares solution (lstsq, gelsd) of the explicit matrix;
    the SVD route (the base class) agrees with the operator's closed form."""
    x, y = random_pair(op, shape)
    ax = op.forward(x)
    assert torch.allclose(op.forward(op.pinv(ax)), ax, rtol=0, atol=1e-10)
    matrix = explicit_matrix(op, shape)
    least_squares = torch.linalg.lstsq(matrix, y.reshape(2, -1).T, driver="gelsd").solution.T
    assert torch.allclose(op.pinv(y).reshape(2, -1), least_squares, rtol=0, atol=1e-9)
    svd_route = LinearOperator.pinv(op, y)
    assert torch.allclose(svd_route, op.pinv(y), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name, op, shape", CASES, ids=IDS)
def test_prox_solves_the_normal_equations(name, op, shape):
    """prox(z, y, rho) = argmin ||A x - y||^2 + rho ||x - z||^2: A^T(A x - y) + rho (x - z) = 0, per-sample rho."""
    z, y = random_pair(op, shape, seed=1)
    rho = torch.tensor([0.3, 2.0], dtype=D)
    x = op.prox(z, y, rho)
    residual = op.adjoint(op.forward(x) - y) + rho.reshape(2, 1, 1, 1) * (x - z)
    assert residual.abs().max() < 1e-10
    matrix = explicit_matrix(op, shape)
    direct = torch.linalg.solve(matrix.T @ matrix + 0.3 * torch.eye(matrix.shape[1], dtype=D),
                                matrix.T @ y[0].reshape(-1) + 0.3 * z[0].reshape(-1))
    assert torch.allclose(op.prox(z[:1], y[:1], 0.3).reshape(-1), direct, rtol=0, atol=1e-10)


def test_float32_and_shape_free_use():
    """float32 inputs use float32 constants (results match float64 to float32 precision); pooling and blur
    work without size= (forward/adjoint/pinv), the SVD then asks for it."""
    x = torch.rand(1, 3, 16, 16, generator=generator(4), dtype=D)
    for op in (SuperResolutionBicubic(4, 16), Blur(gaussian_kernel(5, 1.5), 16), Colorization(16)):
        out32 = op.forward(x.float())
        assert out32.dtype == torch.float32
        assert torch.allclose(out32.double(), op.forward(x), atol=1e-6)
        assert op.vt(x.float()).dtype == torch.float32
    pool = SuperResolutionPool(2)
    assert torch.allclose(pool.pinv(pool.forward(x)), x.reshape(1, 3, 8, 2, 8, 2).mean((3, 5)).repeat_interleave(
        2, -2).repeat_interleave(2, -1))
    with pytest.raises(ValueError, match="size="):
        pool.vt(x)
    with pytest.raises(ValueError, match="larger than the image"):
        Blur(gaussian_kernel(21, 2.0), 16)


def test_pool_is_avg_pool2d():
    x = torch.rand(2, 3, 16, 12, generator=generator(5), dtype=D)
    op = SuperResolutionPool(4, (3, 16, 12))
    assert torch.equal(op.forward(x), F.avg_pool2d(x, 4))
    assert torch.allclose(op.singulars(), torch.full((3 * 4 * 3,), 0.25, dtype=D))


def test_colorization_is_the_channel_mean():
    """DDRM's colorization matrix is [0.3333, 0.3334, 0.3333] per pixel: the mean; singular value 1/sqrt(3)."""
    x = torch.rand(2, 3, 5, 4, generator=generator(6), dtype=D)
    op = Colorization((3, 5, 4))
    assert torch.allclose(op.forward(x), x.mean(dim=1, keepdim=True), rtol=0, atol=1e-15)
    assert torch.allclose(op.singulars(), torch.full((20,), 1 / math.sqrt(3), dtype=D))
    assert torch.allclose(op.pinv(op.forward(x)), x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1))


def test_bicubic_rows_are_ddrm_taps():
    """DDRM's SR-bicubic (runners/diffusion.py + SRConv, factor f even): taps k[t] = Keys((t - 2f + 1/2) / f),
    t < 4f, normalised, placed at input j = i - 2f + t for output i // f, i = f/2 + f o, with reflective padding
    j < 0 -> -j - 1 and j >= n -> 2n - 1 - j.  Written here from that description, independently of
    bicubic_matrix's (o + 1/2) f - 1/2 centres."""
    for f, n in ((2, 12), (4, 16), (4, 32)):
        taps = keys_cubic((torch.arange(4 * f, dtype=D) - 2 * f + 0.5) / f)
        taps = taps / taps.sum()
        expected = torch.zeros(n // f, n, dtype=D)
        for i in range(f // 2, n + f // 2, f):
            for t in range(4 * f):
                j = i - 2 * f + t
                j = -j - 1 if j < 0 else (2 * n - 1 - j if j >= n else j)
                expected[i // f, j] += taps[t]
        assert torch.allclose(bicubic_matrix(n, f), expected, rtol=0, atol=1e-15)


def test_bicubic_matches_torch_and_pil_antialiased_bicubic():
    """Same kernel (Keys a = -0.5 stretched by f) and centres as torch's interpolate(bicubic, antialias=True)
    and PIL's BICUBIC: equal to float64 rounding (torch) and float32 rounding (PIL, mode 'F') away from the
    borders; the outer 2 output pixels differ because torch/PIL renormalise truncated weights where DDRM
    reflects: at most 0.02 on this smooth image of range [0.2, 0.9] (measured 0.005 for f=2, 0.010 for f=4)."""
    Image = pytest.importorskip("PIL.Image")
    n = 32
    r = torch.arange(n, dtype=D) / n
    smooth = 0.5 + 0.25 * torch.sin(2 * math.pi * r)[:, None] * torch.cos(2 * math.pi * r)[None, :] + 0.1 * r[:, None]
    noise = torch.rand(n, n, generator=generator(7), dtype=D)
    for f in (2, 4):
        op = SuperResolutionBicubic(f, (1, n, n))
        for image, border_tolerance in ((smooth, 0.02), (noise, None)):
            x = image[None, None]
            ours = op.forward(x)[0, 0]
            reference = F.interpolate(x, scale_factor=1 / f, mode="bicubic", antialias=True)[0, 0]
            assert torch.allclose(ours[2:-2, 2:-2], reference[2:-2, 2:-2], rtol=0, atol=1e-12)
            if border_tolerance:
                assert (ours - reference).abs().max() < border_tolerance
            pil = np.asarray(Image.fromarray(image.numpy().astype(np.float32), mode="F").resize(
                (n // f, n // f), Image.BICUBIC, reducing_gap=None))
            assert np.abs(pil - ours.numpy())[2:-2, 2:-2].max() < 1e-6


def test_blur_is_circular_convolution():
    """y[p] = sum_t k[t] x[(p - t + c) mod N], c = kernel centre (kh//2, kw//2); also scipy.ndimage.convolve
    with mode='wrap' (DiffPIR's deblurring measurement) for an odd kernel; singulars = |FFT(kernel)|."""
    g = generator(8)
    x = torch.rand(1, 2, 7, 6, generator=g, dtype=D)
    for kernel in (torch.rand(3, 5, generator=g, dtype=D), torch.rand(4, 2, generator=g, dtype=D)):
        kh, kw = kernel.shape
        expected = torch.zeros_like(x)
        for p in range(7):
            for q in range(6):
                for a in range(kh):
                    for b in range(kw):
                        expected[..., p, q] += kernel[a, b] * x[..., (p - a + kh // 2) % 7, (q - b + kw // 2) % 6]
        op = Blur(kernel, (2, 7, 6))
        assert torch.allclose(op.forward(x), expected, rtol=0, atol=1e-13)
        padded = torch.zeros(7, 6, dtype=D)
        padded[:kh, :kw] = kernel
        magnitude = torch.fft.fft2(padded).abs().reshape(-1)       # |FFT| is shift-invariant
        assert torch.allclose(torch.sort(op.singulars()).values, torch.sort(magnitude.repeat(2)).values, atol=1e-13)
    ndimage = pytest.importorskip("scipy.ndimage")
    kernel = torch.rand(3, 5, generator=g, dtype=D)
    wrapped = ndimage.convolve(x[0, 0].numpy(), kernel.numpy(), mode="wrap")
    assert np.allclose(Blur(kernel).forward(x)[0, 0].numpy(), wrapped, rtol=0, atol=1e-13)


def test_inpainting_masks():
    """A^T A = diag(mask); box and random masks remove what they say, in every channel."""
    op = Inpainting.random_pixels((3, 8, 8), 0.25, generator(9))
    mask = op.mask
    assert torch.equal(mask[0], mask[1]) and torch.equal(mask[0], mask[2])
    assert int((mask[0] == 0).sum()) == 16
    matrix = explicit_matrix(op, (3, 8, 8))
    assert torch.equal(matrix.T @ matrix, torch.diag(mask.reshape(-1)))
    assert torch.equal(op.singulars(), torch.ones(3 * 48, dtype=D))
    assert not torch.equal(mask, Inpainting.random_pixels((3, 8, 8), 0.25, generator(10)).mask)
    box = Inpainting.box((3, 8, 8), (2, 1, 3, 4)).mask
    assert int(box.sum()) == 3 * (64 - 12) and bool((box[:, 2:5, 1:5] == 0).all())
    with pytest.raises(ValueError):
        Inpainting.box(8, (6, 0, 3, 3))


def test_measure_adds_gaussian_noise_of_the_given_sigma():
    """12288 noise samples: sample std within 3% of sigma (its standard error is 0.64%), mean within 3 standard
    errors of 0; the same generator seed gives the same measurement."""
    x = torch.rand(1, 3, 64, 64, generator=generator(11), dtype=D)
    op = Blur(gaussian_kernel(5, 1.0), noise_sigma=0.1)
    noise = op.measure(x, generator(12)) - op.forward(x)
    assert abs(noise.std().item() - 0.1) < 0.003
    assert abs(noise.mean().item()) < 3 * 0.1 / math.sqrt(noise.numel())
    assert torch.equal(op.measure(x, generator(12)), op.measure(x, generator(12)))
    assert torch.equal(Identity().measure(x, generator(12)), x)                         # sigma_y = 0


def test_nonlinear_forward_and_gradient():
    x = torch.rand(1, 3, 4, 4, generator=generator(13), dtype=D, requires_grad=True)
    op = NonLinear(lambda t: torch.tanh(2 * t), noise_sigma=0.05)
    assert not op.is_linear and not hasattr(op, "adjoint")
    y = op.measure(x.detach(), generator(14))
    loss = (y - op(x)).pow(2).sum()
    loss.backward()
    expected = -2 * (y - torch.tanh(2 * x.detach())) * 2 / torch.cosh(2 * x.detach()) ** 2
    assert torch.allclose(x.grad, expected, atol=1e-12)


def test_kernels():
    gauss = gaussian_kernel(31, 2.0)
    r = torch.arange(31, dtype=D) - 15
    assert abs(gauss.sum().item() - 1) < 1e-14 and torch.equal(gauss, gauss.T) and torch.equal(gauss, gauss.flip(0))
    assert abs((gauss.sum(1) * r ** 2).sum().item() - 4.0) < 1e-6           # variance sigma^2
    kernel = motion_kernel(15, 0.5, generator(15))
    assert kernel.shape == (15, 15) and bool((kernel >= 0).all()) and abs(kernel.sum().item() - 1) < 1e-14
    assert torch.equal(kernel, motion_kernel(15, 0.5, generator(15)))
    assert not torch.equal(kernel, motion_kernel(15, 0.5, generator(16)))
    rows_hit, cols_hit = kernel.sum(1) > 0, kernel.sum(0) > 0     # the path spans the kernel along its longer side
    assert bool(rows_hit[0] and rows_hit[-1]) or bool(cols_hit[0] and cols_hit[-1])
    # intensity 0: a straight line, so the mass has (almost) no spread across its principal direction
    line = motion_kernel(21, 0.0, generator(17))
    rows, cols = torch.meshgrid(torch.arange(21, dtype=D), torch.arange(21, dtype=D), indexing="ij")
    points = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1)
    centred = points - (line.reshape(-1, 1) * points).sum(0)
    covariance = (line.reshape(-1, 1, 1) * centred[:, :, None] * centred[:, None, :]).sum(0)
    smallest, largest = torch.linalg.eigvalsh(covariance)
    assert smallest / largest < 0.01
    curved = motion_kernel(21, 1.0, generator(17))
    assert not torch.equal(curved, line)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_operator_factories(name):
    x = torch.rand(1, 3, 16, 16, generator=generator(18), dtype=D)
    op = OPERATORS[name]((3, 16, 16), generator(19), 0.05)
    assert op.noise_sigma == 0.05 and op.has_svd
    expected_shape = {"sr2_bicubic": (1, 3, 8, 8), "sr2_pool": (1, 3, 8, 8), "sr4_bicubic": (1, 3, 4, 4),
                      "sr4_pool": (1, 3, 4, 4), "colorize": (1, 1, 16, 16)}
    assert op.forward(x).shape == expected_shape.get(name, (1, 3, 16, 16))
    s = op.singulars()
    assert torch.allclose(op.u(op._pad(s * op.vt(x)[:, :s.numel()], op.output_dim)), op.forward(x), atol=1e-12)
    again = OPERATORS[name]((3, 16, 16), generator(19), 0.05)
    assert torch.equal(again.forward(x), op.forward(x))                           # a function of the generator


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    """Constants follow the input to the GPU; a CPU generator can drive the noise of a CUDA measurement."""
    x = torch.rand(2, 3, 16, 16, generator=generator(20))
    for name in sorted(OPERATORS):
        op = OPERATORS[name]((3, 16, 16), generator(21), 0.05)
        y_cpu, y_gpu = op.measure(x, generator(22)), op.measure(x.cuda(), generator(22))
        assert y_gpu.device.type == "cuda"
        assert torch.allclose(y_gpu.cpu(), y_cpu, atol=1e-5), name
        assert torch.allclose(op.pinv(y_gpu).cpu(), op.pinv(y_cpu), atol=1e-3), name
        assert torch.allclose(op.v(op.vt(x.cuda())).cpu(), x, atol=1e-5), name
