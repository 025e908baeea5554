"""Degradation operators y = A x + sigma_y n for zero-shot restoration with unconditional diffusion priors.

The samplers of issue 25 use the operator in different ways, and this module serves all of them:

* DPS (Chung et al., "Diffusion Posterior Sampling for General Noisy Inverse Problems", ICLR 2023) needs only
  ``forward`` and autograd through it, so any differentiable map works (``NonLinear``);
* DDRM (Kawar et al., "Denoising Diffusion Restoration Models", NeurIPS 2022) works in the spectral space of
  the SVD A = U Sigma V^T (Sec. 3) and, to keep it cheap, with operators whose SVD has structure (its appendix;
  ``functions/svd_replacement.py`` in the release): ``vt`` (V^T x), ``v``, ``ut`` (U^T y), ``u``, ``singulars``;
* DDNM+ (Wang et al., ICLR 2023) and PiGDM (Song et al., ICLR 2023) use the pseudo-inverse A^+ (``pinv``;
  DDNM's regularised s / (s^2 + eta) is ``prox(0, y, eta)``);
* DiffPIR (Zhu et al., CVPRW 2023) solves the data sub-problem argmin_x ||A x - y||^2 + rho ||x - z||^2 in closed
  form (``prox``; by FFT for circular blur, as DiffPIR does, in the SVD basis otherwise).

Conventions.  Images are batched [B, C, H, W] real tensors; measurements are [B, C', H', W'].  Spectral vectors
are flat [B, n] (for V) and [B, m] (for U); their first k entries are the kept dimensions, in the order of
``singulars()`` (length k, not sorted: DDRM's update is element-wise and needs no sorting).  U and V are real and
orthogonal, so Gaussian noise stays white in the spectral space as DDRM's derivation assumes.  Operators keep
their constants in float64 and cast them (cached) to the dtype/device of the input, so float64 tests are exact
and float32/CUDA sampling needs no ``.to()``.  ``size`` is an int (square, 3 channels), (H, W) or (C, H, W); the
spectral methods ``v``/``u``/``singulars`` need it (``forward``/``adjoint``/``pinv`` mostly do not).

Choices, with the facts they rest on:

* Colorization: grey = mean of the channels, weights (1/3, 1/3, 1/3): DDRM's ``Colorization`` uses the per-pixel
  matrix [0.3333, 0.3334, 0.3333] (the mean rounded) and DDNM reuses it; a luma weighting (BT.601
  0.299/0.587/0.114) is possible through ``weights=`` (the SVD is then computed per pixel from the weights).
* Bicubic downsampling (``SuperResolutionBicubic``): a separable matrix D_H X D_W^T, each 1-D matrix built from the
  Keys cubic kernel with a = -0.5 stretched by the factor (antialiasing), output pixel k centred at input
  coordinate (k + 1/2) f - 1/2, rows normalised to sum 1, symmetric (half-sample) reflection at the borders, and
  its SVD from ``torch.linalg.svd`` of the two 1-D matrices.  This follows DDRM (``SRConv`` with its bicubic
  taps: 4f taps at ((i - 2f + 1/2)/f), normalised, reflective padding; identical for even f, which is all DDRM
  uses; for odd f DDRM's centring is half a pixel off and this follows the (k + 1/2) f - 1/2 centre).  DPS's
  ``Resizer`` (Shocher's MATLAB-imresize port: same a = -0.5 antialiased kernel, same centres, mirror padding)
  gives the same matrix; DPS's "transpose" is nearest-neighbour upsampling, not the adjoint, and is not
  followed.  torch's ``interpolate(mode="bicubic", antialias=True)`` and PIL's BICUBIC have the same interior
  weights but renormalise truncated weights at the borders, so they differ only in the outer 2 output pixels.
  Unlike DDRM, singular values are kept as they are (no zeroing below 3e-2; they lie in [0.35, 0.5] for f = 4);
  ``pinv(rtol=...)`` truncates when a sampler wants it.
* Average pooling (``SuperResolutionPool``): separable too; its 1-D SVD is closed form (U = I, singular value
  1/sqrt(f) per block, V = per-block orthonormal DCT-II whose first vector is constant), O(n) to apply.
* Blur: circular convolution (true convolution, kernel centre at index (kh // 2, kw // 2): the convention of
  ``scipy.ndimage.convolve(mode="wrap")``, which DiffPIR uses for its closed-form deblurring).  A circulant matrix
  is diagonalised by the unitary DFT; to keep U and V real the spectrum is written in the real orthonormal
  Fourier basis (for each conjugate pair k, -k: sqrt(2) Re X_k and sqrt(2) Im X_k; Re X_k for self-conjugate k)
  so that V^T is that basis and U^T is the same basis after removing the kernel's phase.  The singular values
  are |FFT(kernel)| (each pair twice) and the SVD is exact (tests: U S V^T = A, orthonormality, svdvals).
  DPS and DDRM blur with zero/reflect padding instead; circular blur is what makes the SVD and prox exact.
* Motion kernels: ``motion_kernel`` is written here (DPS imports the ``motionblur`` package): a heading that
  performs a Brownian motion, rasterised by bilinear splatting (see its docstring).

Hand-written because no dependency of osir has batched torch operators with DDRM's real-SVD interface
(DeepInverse's ``deepinv.physics`` is not a dependency); every formula is written from the definitions above.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

Size = Union[int, Sequence[int]]

__all__ = ["Operator", "LinearOperator", "Identity", "Inpainting", "Colorization", "SuperResolutionPool",
           "SuperResolutionBicubic", "Blur", "NonLinear", "gaussian_kernel", "motion_kernel", "keys_cubic",
           "bicubic_matrix", "image_shape", "OPERATORS", "DenseOperator"]


def image_shape(size: Size, channels: int = 3) -> tuple[int, int, int]:
    """(C, H, W) from an int (square), (H, W) (``channels`` channels) or (C, H, W)."""
    if isinstance(size, int):
        return (channels, size, size)
    size = tuple(int(s) for s in size)
    if len(size) == 2:
        return (channels, *size)
    if len(size) == 3:
        return size
    raise ValueError(f"size must be an int, (H, W) or (C, H, W), got {size}")


def _cast(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``tensor`` on ``like``'s device, in ``like``'s real (or matching complex) dtype."""
    dtype = like.dtype if like.is_floating_point() or like.is_complex() else torch.get_default_dtype()
    if tensor.is_complex() and not dtype.is_complex:
        dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    return tensor.to(device=like.device, dtype=dtype)


class _Constants:
    """float64 CPU constants, cast on demand to the dtype/device of the data and cached."""

    def __init__(self):
        self._constants: dict[str, torch.Tensor] = {}
        self._casts: dict[tuple, torch.Tensor] = {}

    def _keep(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach().cpu()
        tensor = tensor.to(torch.complex128 if tensor.is_complex() else torch.float64)
        self._constants[name] = tensor
        self._casts = {key: value for key, value in self._casts.items() if key[0] != name}
        return tensor

    def _constant(self, name: str, like: Optional[torch.Tensor] = None) -> torch.Tensor:
        tensor = self._constants[name]
        if like is None:
            return tensor
        key = (name, like.dtype, like.device)
        if key not in self._casts:
            self._casts[key] = _cast(tensor, like)
        return self._casts[key]


def _along(x: torch.Tensor, dim: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` (acting on the last dimension) along ``dim``."""
    return fn(x.movedim(dim, -1)).movedim(-1, dim)


# ---------------------------------------------------------------------------------------------------------------
# Base classes
# ---------------------------------------------------------------------------------------------------------------

class Operator:
    """y = A(x) + sigma_y n.  ``noise_sigma`` is sigma_y in the units of the images (DPS: 0.05 on [-1, 1])."""

    is_linear = False

    def __init__(self, noise_sigma: float = 0.0):
        if noise_sigma < 0:
            raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
        self.noise_sigma = float(noise_sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def measure(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A x + sigma_y n, n ~ N(0, I) drawn from ``generator`` (on its own device, then moved to x's)."""
        y = self.forward(x)
        if self.noise_sigma == 0:
            return y
        device = generator.device if generator is not None else y.device
        noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=device).to(y.device)
        return y + self.noise_sigma * noise


class LinearOperator(Operator, _Constants):
    """A linear A with ``forward`` (A x) and ``adjoint`` (A^T y); where ``has_svd``, a real SVD A = U Sigma V^T.

    The SVD interface (DDRM's): ``vt(x)`` = V^T x as [B, n]; ``v(c)`` = V c as an image; ``ut(y)`` = U^T y as
    [B, m]; ``u(c)`` = U c as a measurement; ``singulars()`` = the k kept singular values, aligned with the first k
    entries of ``vt`` and ``ut`` (so A x = u(pad_m(s * vt(x)[:, :k])), A^T y = v(pad_n(s * ut(y)[:, :k])).
    ``pinv`` and ``prox`` have SVD-based defaults that subclasses replace with cheaper closed forms.
    """

    is_linear = True
    has_svd = False

    def __init__(self, input_shape: Optional[Sequence[int]] = None, noise_sigma: float = 0.0):
        Operator.__init__(self, noise_sigma)
        _Constants.__init__(self)
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape is not None else None

    # -- shapes -------------------------------------------------------------------------------------------------
    @property
    def output_shape(self) -> tuple[int, ...]:
        raise NotImplementedError(f"{type(self).__name__} needs size= for its output shape")

    def _shape(self) -> tuple[int, ...]:
        if self.input_shape is None:
            raise ValueError(f"{type(self).__name__} needs size= (C, H, W) for its SVD")
        return self.input_shape

    @property
    def input_dim(self) -> int:
        return math.prod(self._shape())

    @property
    def output_dim(self) -> int:
        return math.prod(self.output_shape)

    def _as_image(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self._shape())

    # -- the operator --------------------------------------------------------------------------------------------
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- SVD -----------------------------------------------------------------------------------------------------
    def vt(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no cheap SVD")

    def v(self, coefficients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no cheap SVD")

    def ut(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no cheap SVD")

    def u(self, coefficients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no cheap SVD")

    def singulars(self, like: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The k kept singular values (float64 on the CPU, or ``like``'s dtype/device)."""
        raise NotImplementedError(f"{type(self).__name__} has no cheap SVD")

    @staticmethod
    def _pad(coefficients: torch.Tensor, length: int) -> torch.Tensor:
        """Trailing zeros up to ``length`` (DDRM's ``add_zeros``)."""
        return F.pad(coefficients, (0, length - coefficients.shape[1]))

    def _kept(self, s: torch.Tensor, rtol: Optional[float]) -> torch.Tensor:
        if rtol is None:      # torch.linalg.pinv's and lstsq(gelsd)'s default: eps * max(m, n)
            rtol = torch.finfo(s.dtype).eps * max(self.input_dim, self.output_dim)
        return s > rtol * s.max()

    def pinv(self, y: torch.Tensor, rtol: Optional[float] = None) -> torch.Tensor:
        """A^+ y = V Sigma^+ U^T y; singular values <= rtol * max(s) count as zero."""
        s = self.singulars(like=y)
        kept = self._kept(s, rtol)
        c = self.ut(y)[:, :s.numel()]
        c = torch.where(kept, c / torch.where(kept, s, torch.ones_like(s)), torch.zeros_like(c))
        return self.v(self._pad(c, self.input_dim))

    def prox(self, z: torch.Tensor, y: torch.Tensor, rho: Union[float, torch.Tensor]) -> torch.Tensor:
        """argmin_x ||A x - y||^2 + rho ||x - z||^2 = (A^T A + rho I)^-1 (A^T y + rho z), in the SVD basis.

        ``rho`` > 0 is a number or a [B] tensor (one per sample)."""
        rho = torch.as_tensor(rho, dtype=z.dtype, device=z.device).reshape(-1, 1)
        s = self.singulars(like=z)
        k = s.numel()
        cz = self.vt(z)
        cy = self.ut(y)[:, :k]
        kept = (s * cy + rho * cz[:, :k]) / (s * s + rho)
        return self.v(torch.cat([kept, cz[:, k:]], dim=1))


# ---------------------------------------------------------------------------------------------------------------
# Denoising, inpainting, colorization
# ---------------------------------------------------------------------------------------------------------------

class Identity(LinearOperator):
    """A = I (denoising): U = V = I, all singular values 1."""

    has_svd = True

    def __init__(self, size: Optional[Size] = None, noise_sigma: float = 0.0):
        super().__init__(image_shape(size) if size is not None else None, noise_sigma)

    @property
    def output_shape(self):
        return self._shape()

    def forward(self, x):
        return x

    def adjoint(self, y):
        return y

    def vt(self, x):
        return x.reshape(x.shape[0], -1)

    def v(self, coefficients):
        return self._as_image(coefficients)

    ut, u = vt, v

    def singulars(self, like=None):
        s = torch.ones(self.input_dim, dtype=torch.float64)
        return _cast(s, like) if like is not None else s

    def pinv(self, y, rtol=None):
        return y

    def prox(self, z, y, rho):
        rho = torch.as_tensor(rho, dtype=z.dtype, device=z.device).reshape(-1, *[1] * (z.dim() - 1))
        return (y + rho * z) / (1 + rho)


class Inpainting(LinearOperator):
    """y = mask * x (missing entries read as 0, so y has the image's shape and A = diag(mask), A^T A = mask).

    SVD: U = V = the permutation that lists the kept entries (mask = 1, in raster order over C, H, W) first and
    the missing ones after; singular values 1 on the kept entries (DDRM's ``Inpainting``, with y kept
    image-shaped as DPS does).  ``mask``: [H, W] (shared by ``channels`` channels), [C, H, W] or [1, C, H, W]."""

    has_svd = True

    def __init__(self, mask: torch.Tensor, channels: int = 3, noise_sigma: float = 0.0):
        mask = torch.as_tensor(mask)
        if mask.dim() == 4 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.dim() == 2:
            mask = mask.expand(channels, *mask.shape)
        if mask.dim() != 3:
            raise ValueError(f"mask must be [H, W], [C, H, W] or [1, C, H, W], got {tuple(mask.shape)}")
        mask = mask.to(torch.float64)
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be binary (1 = observed, 0 = missing)")
        super().__init__(tuple(mask.shape), noise_sigma)
        self._keep("mask", mask)
        flat = mask.reshape(-1).bool()
        self.kept_indices = torch.nonzero(flat).reshape(-1)
        self.missing_indices = torch.nonzero(~flat).reshape(-1)
        self._order = torch.cat([self.kept_indices, self.missing_indices])

    @property
    def mask(self) -> torch.Tensor:
        return self._constants["mask"]

    @classmethod
    def box(cls, size: Size, box: Sequence[int], noise_sigma: float = 0.0) -> "Inpainting":
        """Missing rectangle ``box`` = (top, left, height, width), in every channel."""
        c, h, w = image_shape(size)
        top, left, height, width = (int(b) for b in box)
        if not (0 <= top and 0 <= left and height > 0 and width > 0 and top + height <= h and left + width <= w):
            raise ValueError(f"box {box} does not fit in {h}x{w}")
        mask = torch.ones(h, w, dtype=torch.float64)
        mask[top:top + height, left:left + width] = 0
        return cls(mask, channels=c, noise_sigma=noise_sigma)

    @classmethod
    def random_pixels(cls, size: Size, fraction: float, generator: Optional[torch.Generator] = None,
                      noise_sigma: float = 0.0) -> "Inpainting":
        """round(fraction * H * W) pixels missing (all channels of a pixel together), drawn without replacement."""
        c, h, w = image_shape(size)
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        missing = torch.randperm(h * w, generator=generator, device="cpu" if generator is None else generator.device)
        mask = torch.ones(h * w, dtype=torch.float64)
        mask[missing[:round(fraction * h * w)].cpu()] = 0
        return cls(mask.reshape(h, w), channels=c, noise_sigma=noise_sigma)

    @property
    def output_shape(self):
        return self.input_shape

    def forward(self, x):
        return x * self._constant("mask", x)

    adjoint = forward

    def vt(self, x):
        return x.reshape(x.shape[0], -1)[:, self._order.to(x.device)]

    def v(self, coefficients):
        flat = torch.empty_like(coefficients.reshape(coefficients.shape[0], -1))
        flat[:, self._order.to(flat.device)] = coefficients.reshape(coefficients.shape[0], -1)
        return self._as_image(flat)

    ut, u = vt, v

    def singulars(self, like=None):
        s = torch.ones(self.kept_indices.numel(), dtype=torch.float64)
        return _cast(s, like) if like is not None else s

    def pinv(self, y, rtol=None):
        return self.forward(y)

    def prox(self, z, y, rho):
        rho = torch.as_tensor(rho, dtype=z.dtype, device=z.device).reshape(-1, *[1] * (z.dim() - 1))
        mask = self._constant("mask", z)
        return (mask * y + rho * z) / (mask + rho)


class Colorization(LinearOperator):
    """y = sum_c w_c x_c ([B, 1, H, W]); default weights (1/3, 1/3, 1/3), the channel mean (DDRM/DDNM).

    Per pixel A is the 1 x C row w: U = 1, singular value ||w||, V's first column w / ||w||, the other columns an
    orthonormal completion (from ``torch.linalg.svd`` of w).  ``vt`` lists the first-column coefficient of every
    pixel first (the kept dimensions, in raster order), then the other columns' coefficients."""

    has_svd = True

    def __init__(self, size: Optional[Size] = None, weights: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
                 noise_sigma: float = 0.0):
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        channels = weights.numel()
        super().__init__(image_shape(size, channels) if size is not None else None, noise_sigma)
        if self.input_shape is not None and self.input_shape[0] != channels:
            raise ValueError(f"{channels} weights for a {self.input_shape[0]}-channel size")
        u, s, vh = torch.linalg.svd(weights[None], full_matrices=True)
        vh = vh.clone()
        vh[0] *= torch.sign(u[0, 0])         # U = +1: the measurement space needs no rotation
        self._keep("weights", weights)
        self._keep("vh", vh)                 # rows = columns of V
        self.norm = float(s[0])

    @property
    def output_shape(self):
        _, h, w = self._shape()
        return (1, h, w)

    def forward(self, x):
        return torch.einsum("c,bchw->bhw", self._constant("weights", x), x)[:, None]

    def adjoint(self, y):
        return self._constant("weights", y)[None, :, None, None] * y

    def vt(self, x):
        x = self._as_image(x) if x.dim() == 2 else x
        return torch.einsum("ic,bchw->bihw", self._constant("vh", x), x).reshape(x.shape[0], -1)

    def v(self, coefficients):
        c = self._as_image(coefficients)
        return torch.einsum("ic,bihw->bchw", self._constant("vh", c), c)

    def ut(self, y):
        return y.reshape(y.shape[0], -1)

    def u(self, coefficients):
        return coefficients.reshape(coefficients.shape[0], *self.output_shape)

    def singulars(self, like=None):
        _, h, w = self._shape()
        s = torch.full((h * w,), self.norm, dtype=torch.float64)
        return _cast(s, like) if like is not None else s

    def pinv(self, y, rtol=None):          # A A^T = ||w||^2 I
        return self.adjoint(y) / self.norm ** 2


# ---------------------------------------------------------------------------------------------------------------
# Separable operators (average pooling, bicubic): A X = D_H X D_W^T per channel
# ---------------------------------------------------------------------------------------------------------------

class _Axis(_Constants):
    """A 1-D factor D (m x n, full row rank) with its SVD D = U diag(s) V^T, applied along one dimension."""

    def __init__(self, n: int, m: int):
        super().__init__()
        self.n, self.m = n, m


class _DenseAxis(_Axis):
    """A dense 1-D matrix; SVD by ``torch.linalg.svd`` in float64 (DDRM's ``SRConv``: SVD of the 1-D matrix)."""

    def __init__(self, matrix: torch.Tensor):
        matrix = matrix.to(torch.float64)
        super().__init__(matrix.shape[1], matrix.shape[0])
        u, s, vh = torch.linalg.svd(matrix, full_matrices=True)
        self._keep("matrix", matrix)
        self._keep("u", u)
        self._keep("s", s)
        self._keep("v", vh.T)

    def apply(self, x, dim):
        return _along(x, dim, lambda t: t @ self._constant("matrix", t).T)

    def apply_t(self, y, dim):
        return _along(y, dim, lambda t: t @ self._constant("matrix", t))

    def vt(self, x, dim):
        return _along(x, dim, lambda t: t @ self._constant("v", t))

    def v(self, c, dim):
        return _along(c, dim, lambda t: t @ self._constant("v", t).T)

    def ut(self, y, dim):
        return _along(y, dim, lambda t: t @ self._constant("u", t))

    def u(self, c, dim):
        return _along(c, dim, lambda t: t @ self._constant("u", t).T)

    def singulars(self):
        return self._constants["s"]


def _dct_basis(length: int) -> torch.Tensor:
    """Orthonormal DCT-II basis as columns (column 0 constant 1/sqrt(length))."""
    j = torch.arange(length, dtype=torch.float64)[:, None]
    k = torch.arange(length, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * (j + 0.5) * k / length) * math.sqrt(2 / length)
    basis[:, 0] = 1 / math.sqrt(length)
    return basis


class _PoolAxis(_Axis):
    """Block mean over ``factor`` samples: D = I_m (x) 1^T / f.  Closed-form SVD: U = I_m, s = 1/sqrt(f), and V
    the per-block DCT-II basis, ordered with every block's constant vector first (the kept dimensions)."""

    def __init__(self, n: int, factor: int):
        if n % factor:
            raise ValueError(f"size {n} is not a multiple of the scale {factor}")
        super().__init__(n, n // factor)
        self.factor = factor
        self._keep("q", _dct_basis(factor))

    def apply(self, x, dim):
        return _along(x, dim, lambda t: t.reshape(*t.shape[:-1], self.m, self.factor).mean(-1))

    def apply_t(self, y, dim):
        return _along(y, dim, lambda t: (t / self.factor).repeat_interleave(self.factor, dim=-1))

    def vt(self, x, dim):
        def blockwise(t):
            c = t.reshape(*t.shape[:-1], self.m, self.factor) @ self._constant("q", t)
            return c.transpose(-1, -2).reshape(*t.shape[:-1], self.n)
        return _along(x, dim, blockwise)

    def v(self, c, dim):
        def blockwise(t):
            blocks = t.reshape(*t.shape[:-1], self.factor, self.m).transpose(-1, -2)
            return (blocks @ self._constant("q", t).T).reshape(*t.shape[:-1], self.n)
        return _along(c, dim, blockwise)

    def ut(self, y, dim):
        return y

    def u(self, c, dim):
        return c

    def singulars(self):
        return torch.full((self.m,), 1 / math.sqrt(self.factor), dtype=torch.float64)


class _Separable(LinearOperator):
    """A X = D_H X D_W^T per channel, A = D_H (x) D_W, SVD = (U_H (x) U_W)(S_H (x) S_W)(V_H (x) V_W)^T.

    ``vt`` lists the m_H x m_W block of V_H^T X V_W (every channel, raster order) first, then the rest; the
    kept singular values are s_H[i] s_W[j] in the same order (DDRM's ``SRConv`` with its permutation P_1)."""

    has_svd = True

    def __init__(self, rows: _Axis, cols: _Axis, channels: int, noise_sigma: float = 0.0):
        super().__init__((channels, rows.n, cols.n), noise_sigma)
        self.rows, self.cols = rows, cols
        rest = torch.ones(rows.n, cols.n, dtype=torch.bool)
        rest[:rows.m, :cols.m] = False
        self._rest = rest

    @property
    def output_shape(self):
        return (self.input_shape[0], self.rows.m, self.cols.m)

    def forward(self, x):
        return self.cols.apply(self.rows.apply(x, -2), -1)

    def adjoint(self, y):
        return self.cols.apply_t(self.rows.apply_t(y, -2), -1)

    def vt(self, x):
        x = self._as_image(x)
        z = self.cols.vt(self.rows.vt(x, -2), -1)
        rest = self._rest.to(z.device)
        kept = z[..., :self.rows.m, :self.cols.m].reshape(z.shape[0], -1)
        return torch.cat([kept, z[..., rest].reshape(z.shape[0], -1)], dim=1)

    def v(self, coefficients):
        b, (c, n_h, n_w) = coefficients.shape[0], self._shape()
        m_h, m_w = self.rows.m, self.cols.m
        k = c * m_h * m_w
        z = coefficients.new_zeros(b, c, n_h, n_w)
        z[..., :m_h, :m_w] = coefficients[:, :k].reshape(b, c, m_h, m_w)
        z[..., self._rest.to(z.device)] = coefficients[:, k:].reshape(b, c, -1)
        return self.cols.v(self.rows.v(z, -2), -1)

    def ut(self, y):
        y = y.reshape(y.shape[0], *self.output_shape)
        return self.cols.ut(self.rows.ut(y, -2), -1).reshape(y.shape[0], -1)

    def u(self, coefficients):
        c = coefficients.reshape(coefficients.shape[0], *self.output_shape)
        return self.cols.u(self.rows.u(c, -2), -1)

    def singulars(self, like=None):
        self._shape()
        s = torch.outer(self.rows.singulars(), self.cols.singulars()).reshape(-1).repeat(self.input_shape[0])
        return _cast(s, like) if like is not None else s


class SuperResolutionPool(_Separable):
    """y = average pooling by ``scale`` (= ``F.avg_pool2d(x, scale)``): DDRM's "SR by block averaging".

    ``size`` is needed by the SVD only; without it ``forward``/``adjoint``/``pinv`` still work on any size that
    ``scale`` divides.  A A^T = I / scale^2, so A^+ = scale^2 A^T (nearest-neighbour upsampling)."""

    def __init__(self, scale: int, size: Optional[Size] = None, noise_sigma: float = 0.0):
        self.scale = int(scale)
        if size is None:       # shape-free use: no SVD
            LinearOperator.__init__(self, None, noise_sigma)
            return
        c, h, w = image_shape(size)
        super().__init__(_PoolAxis(h, self.scale), _PoolAxis(w, self.scale), c, noise_sigma)

    @property
    def output_shape(self):
        c, h, w = self._shape()
        return (c, h // self.scale, w // self.scale)

    def forward(self, x):
        return F.avg_pool2d(x, self.scale)

    def adjoint(self, y):
        return y.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1) / self.scale ** 2

    def pinv(self, y, rtol=None):
        return self.adjoint(y) * self.scale ** 2


def keys_cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (Keys 1981), a = -0.5 (MATLAB imresize, PIL, DDRM, DPS's Resizer)."""
    x = x.abs()
    near = (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
    far = a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def bicubic_matrix(length: int, scale: int, a: float = -0.5) -> torch.Tensor:
    """The (length / scale) x length antialiased bicubic downsampling matrix (float64).

    Row k: weights keys_cubic((j - c_k) / scale) for the input samples j with |j - c_k| < 2 scale, centre
    c_k = (k + 1/2) scale - 1/2, normalised to sum 1, then folded back into [0, length) by symmetric
    (half-sample) reflection, -1 -> 0, length -> length - 1 (DDRM's SRConv, MATLAB imresize)."""
    if length % scale:
        raise ValueError(f"size {length} is not a multiple of the scale {scale}")
    out = length // scale
    matrix = torch.zeros(out, length, dtype=torch.float64)
    centres = (torch.arange(out, dtype=torch.float64) + 0.5) * scale - 0.5
    offsets = torch.arange(-2 * scale, 2 * scale + 1, dtype=torch.float64)
    for k, centre in enumerate(centres.tolist()):
        taps = torch.floor(torch.tensor(centre)) + offsets
        weights = keys_cubic((taps - centre) / scale, a)
        weights = weights / weights.sum()
        folded = taps.long() % (2 * length)
        folded = torch.where(folded >= length, 2 * length - 1 - folded, folded)
        matrix[k].index_add_(0, folded, weights)
    return matrix


class SuperResolutionBicubic(_Separable):
    """y = antialiased bicubic downsampling by ``scale`` as the separable matrix of ``bicubic_matrix`` (see the
    module docstring for the facts; SVD of the 1-D matrices by ``torch.linalg.svd``, as DDRM's ``SRConv``)."""

    def __init__(self, scale: int, size: Size, noise_sigma: float = 0.0):
        self.scale = int(scale)
        c, h, w = image_shape(size)
        super().__init__(_DenseAxis(bicubic_matrix(h, self.scale)), _DenseAxis(bicubic_matrix(w, self.scale)),
                         c, noise_sigma)


# ---------------------------------------------------------------------------------------------------------------
# Circular blur
# ---------------------------------------------------------------------------------------------------------------

def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """size x size isotropic Gaussian sampled at integer offsets from the centre, normalised to sum 1 (DPS's
    Gaussian deblurring: 61 x 61, sigma 3.0)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    kernel = torch.outer(g, g)
    return kernel / kernel.sum()


def motion_kernel(size: int, intensity: float = 0.5, generator: Optional[torch.Generator] = None,
                  steps: Optional[int] = None) -> torch.Tensor:
    """A random camera-shake kernel (size x size, non-negative, sum 1), written here.

    The camera moves at constant speed along ``steps`` (default 16 size) segments; its heading starts uniform in
    [0, 2 pi) and performs a Brownian motion whose standard deviation over the whole exposure is
    ``intensity`` * pi radians (0: a straight line; 0.5, DPS's setting: gently curved; 1: strongly curved).
    The path is centred and scaled so that its longer bounding-box side spans the kernel (size - 1 pixels, edge
    pixel centre to edge pixel centre), then each path point adds equal exposure, split over its 4 neighbouring
    pixels by bilinear weights."""
    if size < 3:
        raise ValueError(f"motion kernels need size >= 3, got {size}")
    steps = steps or 16 * size
    device = generator.device if generator is not None else torch.device("cpu")
    start = torch.rand((), generator=generator, device=device, dtype=torch.float64).cpu() * 2 * math.pi
    turns = torch.randn(steps, generator=generator, device=device, dtype=torch.float64).cpu()
    heading = start + torch.cumsum(turns * intensity * math.pi / math.sqrt(steps), dim=0)
    path = torch.cat([torch.zeros(1, 2, dtype=torch.float64),
                      torch.cumsum(torch.stack([torch.sin(heading), torch.cos(heading)], dim=1), dim=0)])
    low, high = path.min(0).values, path.max(0).values
    path = (path - (low + high) / 2) * ((size - 1) / (high - low).max()) + (size - 1) / 2   # (row, col)
    base = torch.floor(path).long().clamp(0, size - 2)
    frac = path - base
    kernel = torch.zeros(size * size, dtype=torch.float64)
    for d_row in (0, 1):
        for d_col in (0, 1):
            weight = (frac[:, 0] if d_row else 1 - frac[:, 0]) * (frac[:, 1] if d_col else 1 - frac[:, 1])
            kernel.index_add_(0, (base[:, 0] + d_row) * size + base[:, 1] + d_col, weight)
    kernel = kernel.reshape(size, size)
    return kernel / kernel.sum()


class Blur(LinearOperator):
    """y = k (*) x, circular 2-D convolution of every channel with ``kernel`` [kh, kw] (centre (kh//2, kw//2)).

    By FFT: Y = K X with K = FFT of the kernel zero-padded to H x W and rolled so its centre is at (0, 0).  SVD in
    the real orthonormal Fourier basis (module docstring): ``vt`` = real Fourier coordinates of x, ``ut`` = real
    Fourier coordinates of y after multiplying its spectrum by conj(K)/|K| (1 where K = 0), singular values |K|;
    within a channel the coordinates list self-conjugate frequencies (Re), then sqrt(2) Re, then sqrt(2) Im of
    one frequency of every conjugate pair.  ``pinv`` and ``prox`` are closed forms in the Fourier domain."""

    has_svd = True

    def __init__(self, kernel: torch.Tensor, size: Optional[Size] = None, noise_sigma: float = 0.0):
        kernel = torch.as_tensor(kernel, dtype=torch.float64)
        if kernel.dim() != 2:
            raise ValueError(f"kernel must be [kh, kw], got {tuple(kernel.shape)}")
        super().__init__(image_shape(size) if size is not None else None, noise_sigma)
        self._keep("kernel", kernel)
        if self.input_shape is not None:
            self._check_fits(self.input_shape[1:])
        self._spectra: dict[tuple, tuple] = {}
        self._layouts: dict[tuple, tuple] = {}

    @property
    def kernel(self) -> torch.Tensor:
        return self._constants["kernel"]

    @property
    def output_shape(self):
        return self._shape()

    def _check_fits(self, hw):
        kh, kw = self.kernel.shape
        if kh > hw[0] or kw > hw[1]:
            raise ValueError(f"blur kernel {kh}x{kw} is larger than the image {hw[0]}x{hw[1]}")

    def spectrum(self, hw: Sequence[int], like: Optional[torch.Tensor] = None) -> torch.Tensor:
        """K (H x W, complex), made exactly conjugate-symmetric (K[-f] = conj K[f]) so U and V stay real."""
        h, w = int(hw[0]), int(hw[1])
        key = (h, w, like.dtype if like is not None else None, like.device if like is not None else None)
        if key not in self._spectra:
            self._check_fits((h, w))
            kh, kw = self.kernel.shape
            padded = torch.zeros(h, w, dtype=torch.float64)
            padded[:kh, :kw] = self.kernel
            k = torch.fft.fft2(torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1)))
            k_neg = torch.roll(torch.flip(k, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))     # K[-f]
            k = (k + k_neg.conj()) / 2
            self._spectra[key] = k if like is None else _cast(k, like)
        return self._spectra[key]

    def forward(self, x):
        k = self.spectrum(x.shape[-2:], like=x)
        return torch.fft.ifft2(torch.fft.fft2(x) * k).real

    def adjoint(self, y):
        k = self.spectrum(y.shape[-2:], like=y)
        return torch.fft.ifft2(torch.fft.fft2(y) * k.conj()).real

    # -- real Fourier coordinates ------------------------------------------------------------------------------
    def _layout(self, h: int, w: int, device) -> tuple:
        """Flat indices of the self-conjugate frequencies, of one frequency per conjugate pair, of its partner."""
        key = (h, w, device)
        if key not in self._layouts:
            rows = torch.arange(h)[:, None].expand(h, w)
            cols = torch.arange(w)[None, :].expand(h, w)
            index = (rows * w + cols).reshape(-1)
            partner = (((-rows) % h) * w + (-cols) % w).reshape(-1)
            self._layouts[key] = tuple(t.to(device) for t in (index[index == partner], index[index < partner],
                                                              partner[index < partner]))
        return self._layouts[key]

    def _coordinates(self, spectrum: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] Hermitian spectrum (unitary FFT) -> [B, C*H*W] real orthonormal coordinates."""
        b, c, h, w = spectrum.shape
        own, rep, _ = self._layout(h, w, spectrum.device)
        flat = spectrum.reshape(b, c, h * w)
        pairs = flat[..., rep] * math.sqrt(2)
        return torch.cat([flat[..., own].real, pairs.real, pairs.imag], dim=-1).reshape(b, -1)

    def _spectrum_of(self, coordinates: torch.Tensor, shape) -> torch.Tensor:
        c, h, w = shape
        b = coordinates.shape[0]
        own, rep, partner = self._layout(h, w, coordinates.device)
        coordinates = coordinates.reshape(b, c, h * w)
        n_own, n_rep = own.numel(), rep.numel()
        dtype = torch.complex128 if coordinates.dtype == torch.float64 else torch.complex64
        flat = torch.zeros(b, c, h * w, dtype=dtype, device=coordinates.device)
        flat[..., own] = coordinates[..., :n_own].to(dtype)
        pairs = torch.complex(coordinates[..., n_own:n_own + n_rep],
                              coordinates[..., n_own + n_rep:]) / math.sqrt(2)
        flat[..., rep] = pairs
        flat[..., partner] = pairs.conj()
        return flat.reshape(b, c, h, w)

    def _phase(self, hw, like):
        k = self.spectrum(hw, like=like)
        magnitude = k.abs()
        return torch.where(magnitude > 0, k / torch.where(magnitude > 0, magnitude, 1), torch.ones_like(k))

    def vt(self, x):
        x = self._as_image(x) if x.dim() == 2 else x
        return self._coordinates(torch.fft.fft2(x, norm="ortho"))

    def v(self, coefficients):
        spectrum = self._spectrum_of(coefficients, self._shape())
        return torch.fft.ifft2(spectrum, norm="ortho").real

    def ut(self, y):
        y = self._as_image(y) if y.dim() == 2 else y
        return self._coordinates(torch.fft.fft2(y, norm="ortho") * self._phase(y.shape[-2:], y).conj())

    def u(self, coefficients):
        shape = self._shape()
        spectrum = self._spectrum_of(coefficients, shape) * self._phase(shape[1:], coefficients)
        return torch.fft.ifft2(spectrum, norm="ortho").real

    def singulars(self, like=None):
        c, h, w = self._shape()
        magnitude = self.spectrum((h, w)).abs().reshape(-1)
        own, rep, _ = self._layout(h, w, torch.device("cpu"))
        s = torch.cat([magnitude[own], magnitude[rep], magnitude[rep]]).repeat(c)
        return _cast(s, like) if like is not None else s

    def pinv(self, y, rtol=None):
        """A^+ y = F^-1[conj(K) Y / |K|^2] where |K| > rtol max|K| (default eps * H*W*C), 0 elsewhere."""
        k = self.spectrum(y.shape[-2:], like=y)
        magnitude = k.abs()
        if rtol is None:
            rtol = torch.finfo(y.dtype).eps * math.prod(y.shape[1:])
        kept = magnitude > rtol * magnitude.max()
        inverse = torch.where(kept, k.conj() / torch.where(kept, magnitude, 1) ** 2, torch.zeros_like(k))
        return torch.fft.ifft2(torch.fft.fft2(y) * inverse).real

    def prox(self, z, y, rho):
        """DiffPIR's closed form: F^-1[(conj(K) Y + rho Z) / (|K|^2 + rho)]."""
        rho = torch.as_tensor(rho, dtype=z.dtype, device=z.device).reshape(-1, *[1] * (z.dim() - 1))
        k = self.spectrum(z.shape[-2:], like=z)
        numerator = k.conj() * torch.fft.fft2(y) + rho * torch.fft.fft2(z)
        return torch.fft.ifft2(numerator / (k.abs() ** 2 + rho)).real


# ---------------------------------------------------------------------------------------------------------------
# Non-linear forward models (DPS)
# ---------------------------------------------------------------------------------------------------------------

class NonLinear(Operator):
    """y = fn(x) + sigma_y n for any differentiable ``fn`` (DPS differentiates ||y - fn(x0_hat)|| by autograd).
    Forward only: no adjoint, SVD or pseudo-inverse."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], noise_sigma: float = 0.0):
        super().__init__(noise_sigma)
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


# ---------------------------------------------------------------------------------------------------------------
# Factories: (image size, generator, sigma_y) -> operator
# ---------------------------------------------------------------------------------------------------------------

def _kernel_size(size: Size, largest: int = 61) -> int:
    """DPS's 61 x 61 kernels, shrunk to the largest odd size that fits a smaller image."""
    _, h, w = image_shape(size)
    side = min(largest, h, w)
    return side if side % 2 else side - 1


def _inpaint_box(size: Size, generator: Optional[torch.Generator], sigma_y: float) -> Inpainting:
    """A missing box of half the image side at a random position, at least side/16 from the borders (DPS: a
    128 x 128 box in 256 x 256 images)."""
    _, h, w = image_shape(size)
    box_h, box_w, margin_h, margin_w = h // 2, w // 2, h // 16, w // 16
    device = generator.device if generator is not None else "cpu"
    top = int(torch.randint(margin_h, h - margin_h - box_h + 1, (), generator=generator, device=device))
    left = int(torch.randint(margin_w, w - margin_w - box_w + 1, (), generator=generator, device=device))
    return Inpainting.box(size, (top, left, box_h, box_w), noise_sigma=sigma_y)


# Degradations by name; each factory takes (image size, torch generator or None, sigma_y).  Kernels and masks
# follow DPS's settings (61 x 61 kernels, Gaussian sigma 3.0, motion intensity 0.5, a 128 box in 256 images);
# random inpainting drops 70% of the pixels (DPS's config draws that fraction in [0.3, 0.7]).
OPERATORS: dict[str, Callable[[Size, Optional[torch.Generator], float], Operator]] = {
    "denoise": lambda size, generator, sigma_y: Identity(size, noise_sigma=sigma_y),
    "sr2_bicubic": lambda size, generator, sigma_y: SuperResolutionBicubic(2, size, noise_sigma=sigma_y),
    "sr2_pool": lambda size, generator, sigma_y: SuperResolutionPool(2, size, noise_sigma=sigma_y),
    "sr4_bicubic": lambda size, generator, sigma_y: SuperResolutionBicubic(4, size, noise_sigma=sigma_y),
    "sr4_pool": lambda size, generator, sigma_y: SuperResolutionPool(4, size, noise_sigma=sigma_y),
    "gaussian_blur": lambda size, generator, sigma_y: Blur(gaussian_kernel(_kernel_size(size), 3.0), size,
                                                           noise_sigma=sigma_y),
    "motion_blur": lambda size, generator, sigma_y: Blur(motion_kernel(_kernel_size(size), 0.5, generator), size,
                                                         noise_sigma=sigma_y),
    "inpaint_box": _inpaint_box,
    "inpaint_random": lambda size, generator, sigma_y: Inpainting.random_pixels(size, 0.7, generator,
                                                                                noise_sigma=sigma_y),
    "colorize": lambda size, generator, sigma_y: Colorization(size, noise_sigma=sigma_y),
}


# ---------------------------------------------------------------------------------------------------------------
# Dense matrices on flat vectors (the Gaussian-mixture benchmark of gmm.py)
# ---------------------------------------------------------------------------------------------------------------

class DenseOperator(LinearOperator):
    """y = M x for flat vectors x [B, d] -> y [B, m], any m x d matrix M (the random measurement matrices of the
    Gaussian-mixture experiments, MCGdiff Sec. 4.1); anything [B, ...] with d entries per sample is flattened.

    SVD by ``torch.linalg.svd(M, full_matrices=True)`` in float64: ``vt``/``v`` with the full d x d V,
    ``ut``/``u`` with the full m x m U, and ``singulars()`` the r = rank(M) singular values above
    ``rtol * max`` (default eps * max(m, d), torch.linalg.pinv's), so a rank-deficient M keeps only its nonzero
    ones: A x = u(pad_m(s * vt(x)[:, :r])) still holds and no sampler divides by a zero singular value."""

    has_svd = True

    def __init__(self, matrix: torch.Tensor, noise_sigma: float = 0.0, rtol: Optional[float] = None):
        matrix = torch.as_tensor(matrix).detach().to("cpu", torch.float64)
        if matrix.dim() != 2:
            raise ValueError(f"matrix must be [m, d], got {tuple(matrix.shape)}")
        m, d = matrix.shape
        super().__init__((d,), noise_sigma)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=True)
        if rtol is None:
            rtol = torch.finfo(torch.float64).eps * max(m, d)
        rank = int((s > rtol * s.max()).sum()) if s.numel() else 0
        if rank == 0:
            raise ValueError("the matrix is zero: no singular value to keep")
        self.rank = rank
        self._keep("matrix", matrix)
        self._keep("u", u)
        self._keep("s", s[:rank])
        self._keep("v", vh.T)

    @property
    def matrix(self) -> torch.Tensor:
        return self._constants["matrix"]

    @property
    def output_shape(self):
        return (self.matrix.shape[0],)

    def forward(self, x):
        return x.reshape(x.shape[0], -1) @ self._constant("matrix", x).T

    def adjoint(self, y):
        return y.reshape(y.shape[0], -1) @ self._constant("matrix", y)

    def vt(self, x):
        return x.reshape(x.shape[0], -1) @ self._constant("v", x)

    def v(self, coefficients):
        return coefficients @ self._constant("v", coefficients).T

    def ut(self, y):
        return y.reshape(y.shape[0], -1) @ self._constant("u", y)

    def u(self, coefficients):
        return coefficients @ self._constant("u", coefficients).T

    def singulars(self, like=None):
        s = self._constants["s"]
        return _cast(s, like) if like is not None else s
