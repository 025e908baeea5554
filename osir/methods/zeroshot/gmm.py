"""Gaussian-mixture priors with exact scores and exact linear-Gaussian posteriors: the ground truth against which
the zero-shot samplers (DDRM, DDNM+, DPS, PiGDM, DiffPIR, SMC samplers) are measured in low dimension, as in
Cardoso et al., "Monte Carlo guided diffusion for Bayesian linear inverse problems" (MCGdiff, ICLR 2024, Sec. 4.1).

* A mixture p(x) = sum_k w_k N(x; m_k, S_k) diffused by the VP process x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) e
  stays a mixture: p_t(x) = sum_k w_k N(x; sqrt(abar_t) m_k, abar_t S_k + (1 - abar_t) I).  Its score is
  grad log p_t(x) = -sum_k r_k(x) C_k^-1 (x - mu_k) with the responsibilities r_k(x) = w_k N_k(x) / p_t(x), and the
  optimal noise prediction is eps(x, t) = -sqrt(1 - abar_t) grad log p_t(x) (Tweedie; Ho et al. 2020, Eq. 4 and
  Song et al. 2021, score-based SDEs, Eq. 7 read the other way).  ``GaussianMixturePrior`` fulfils the prior
  protocol of ``diffusion.py`` with it, in float64, through the eigendecomposition S_k = Q_k diag(l_k) Q_k^T
  (then C_k = Q_k diag(abar l_k + 1 - abar) Q_k^T at every t for the price of one decomposition), and with a
  fast path for isotropic S_k = v_k I.  ``eps`` is differentiable in x (DPS takes its gradient).
* For y = A x + sigma_y n, n ~ N(0, I), the posterior of the mixture is a mixture (Bishop, PRML, Eqs. 2.113-2.117
  per component): weights proportional to w_k N(y; A m_k, A S_k A^T + sigma_y^2 I), means
  m_k + S_k A^T G_k^-1 (y - A m_k) and covariances S_k - S_k A^T G_k^-1 A S_k with G_k = A S_k A^T + sigma_y^2 I.
  ``exact_posterior`` first reduces A to its r = rank(A) independent rows: with A = U_r diag(s_r) V_r^T,
  y' = U_r^T y = diag(s_r) V_r^T x + sigma_y U_r^T n carries all the information about x (the component of y
  orthogonal to range(A) is noise independent of x and of k), so A' = diag(s_r) V_r^T has full row rank and
  G'_k = A' S_k A'^T + sigma_y^2 I_r is positive definite even for sigma_y = 0 with a rank-deficient A: the
  noiseless posterior is then the exact limit sigma_y -> 0 (each component degenerate on {x : A' x = y'}; y
  outside range(A) has no noiseless posterior, and is projected onto it).  Degenerate covariances are sampled
  through their eigendecomposition and given densities on their support (pseudo-determinant), which is what
  the responsibilities of samples need since all components share the support {A' x = y'}.
* ``sliced_wasserstein``: SW_2(a, b)^2 = E_theta W_2^2(theta . a, theta . b) over directions theta uniform on the
  sphere (Bonneel et al. 2015), each 1-D W_2 between two empirical measures of N points being the mean squared
  difference of the sorted projections; estimated with random directions.
* ``component_weights``: the mixture weights a set of samples shows, by assigning each sample to its most
  responsible component (the weight metric of MCGdiff's Gaussian-mixture experiments).

Hand-written: torch.distributions has Gaussians and mixtures but neither the diffused family (abar S + (1 - abar) I
at every t from one eigendecomposition), nor the conditioning on a rank-deficient linear measurement, nor the
sliced Wasserstein distance (POT's ``ot.sliced_wasserstein_distance`` is not a dependency of osir).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from osir.methods.zeroshot.diffusion import linear_alphas_cumprod

__all__ = ["GaussianMixture", "GaussianMixturePrior", "exact_posterior", "sliced_wasserstein",
           "component_weights", "total_variation"]

D = torch.float64
#: eigenvalues below this fraction of a component's largest count as zero (degenerate posterior covariances)
DEGENERATE_RTOL = 1e-9


def _device_of(generator: Optional[torch.Generator]) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


class GaussianMixture:
    """p(x) = sum_k w_k N(x; m_k, S_k) on flat vectors x [B, d], float64.

    ``means`` [K, d]; ``covariances`` [K, d, d] (full, positive semi-definite) or [K] / a number (isotropic
    variances v_k, S_k = v_k I); ``weights`` [K] (normalised here; uniform when None)."""

    def __init__(self, means: torch.Tensor, covariances: Union[torch.Tensor, float, Sequence[float]],
                 weights: Optional[torch.Tensor] = None):
        means = torch.as_tensor(means, dtype=D).detach().cpu()
        if means.dim() != 2:
            raise ValueError(f"means must be [K, d], got {tuple(means.shape)}")
        k, d = means.shape
        covariances = torch.as_tensor(covariances, dtype=D).detach().cpu()
        if covariances.dim() == 0:
            covariances = covariances.expand(k).clone()
        if covariances.dim() == 1:
            if covariances.numel() != k or bool((covariances <= 0).any()):
                raise ValueError(f"isotropic variances must be [K={k}] and positive, got {covariances.tolist()}")
            self.variances: Optional[torch.Tensor] = covariances
            self.eigenvalues = self.eigenvectors = None
        elif covariances.shape == (k, d, d):
            covariances = (covariances + covariances.transpose(1, 2)) / 2
            eigenvalues, eigenvectors = torch.linalg.eigh(covariances)
            scale = eigenvalues.abs().amax(-1, keepdim=True)
            if bool((eigenvalues < -1e-8 * scale).any()):
                raise ValueError("covariances must be positive semi-definite")
            self.variances = None
            # round-off eigenvalues of a degenerate covariance (the noiseless posterior's) are exactly 0
            self.eigenvalues = torch.where(eigenvalues > DEGENERATE_RTOL * scale, eigenvalues,
                                           torch.zeros_like(eigenvalues))                  # [K, d]
            self.eigenvectors = eigenvectors                     # [K, d, d], columns
        else:
            raise ValueError(f"covariances must be [K={k}], a number or [K, d, d]={k, d, d}, "
                             f"got {tuple(covariances.shape)}")
        weights = torch.full((k,), 1.0 / k, dtype=D) if weights is None else torch.as_tensor(weights, dtype=D)
        weights = weights.detach().cpu().reshape(-1)
        if weights.numel() != k or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(f"weights must be [K={k}], non-negative, not all zero")
        self.means = means
        self.weights = weights / weights.sum()
        self._on: dict[torch.device, dict[str, torch.Tensor]] = {}

    # -- shapes and moments ----------------------------------------------------------------------------------
    @property
    def components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def isotropic(self) -> bool:
        return self.variances is not None

    @property
    def covariances(self) -> torch.Tensor:
        """[K, d, d] full covariances."""
        if self.isotropic:
            return self.variances[:, None, None] * torch.eye(self.dim, dtype=D)
        q = self.eigenvectors
        return q @ (self.eigenvalues[..., None] * q.transpose(1, 2))

    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Law of total covariance: sum_k w_k (S_k + m_k m_k^T) - m m^T."""
        m = self.mean()
        second = (self.weights[:, None, None] * (self.covariances + self.means[:, :, None] * self.means[:, None]))
        return second.sum(0) - torch.outer(m, m)

    def _constants(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._on:
            names = {"means": self.means, "log_weights": self.weights.log(), "variances": self.variances,
                     "eigenvalues": self.eigenvalues, "eigenvectors": self.eigenvectors}
            self._on[device] = {key: value.to(device) for key, value in names.items() if value is not None}
        return self._on[device]

    # -- densities -------------------------------------------------------------------------------------------
    def _gaussian_terms(self, x: torch.Tensor, mean_scale: torch.Tensor, cov_scale: torch.Tensor,
                        cov_add: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the components N(mean_scale m_k, cov_scale S_k + cov_add I) (scales [B, 1] or [1, 1]):
        log N_k(x) [B, K] and C_k^-1 (x - mu_k) [B, K, d].  With cov_add = 0, eigenvalues below
        ``DEGENERATE_RTOL`` of a component's largest are its null directions (pseudo-inverse and
        pseudo-determinant: the density on the component's support)."""
        c = self._constants(x.device)
        d = self.dim
        diff = x[:, None, :] - mean_scale[..., None] * c["means"][None]                      # [B, K, d]
        if self.isotropic:
            var = cov_scale * c["variances"][None] + cov_add                                  # [B, K]
            mahalanobis = (diff * diff).sum(-1) / var
            log_det, rank = d * var.log(), torch.full_like(var, d)
            precision_diff = diff / var[..., None]
        else:
            lam = cov_scale[..., None] * c["eigenvalues"][None] + cov_add[..., None]           # [B|1, K, d]
            kept = lam > DEGENERATE_RTOL * lam.amax(-1, keepdim=True)
            inverse = torch.where(kept, 1 / torch.where(kept, lam, torch.ones_like(lam)), torch.zeros_like(lam))
            z = torch.einsum("bkd,kde->bke", diff, c["eigenvectors"])                         # Q_k^T (x - mu_k)
            mahalanobis = (z * z * inverse).sum(-1)
            log_det = torch.where(kept, lam, torch.ones_like(lam)).log().sum(-1)
            rank = kept.sum(-1).to(x.dtype)
            precision_diff = torch.einsum("bke,kde->bkd", z * inverse, c["eigenvectors"])
        log_density = -0.5 * (mahalanobis + log_det + rank * math.log(2 * math.pi))
        return log_density, precision_diff

    @staticmethod
    def _scalar(value: float, x: torch.Tensor) -> torch.Tensor:
        return torch.full((1, 1), float(value), dtype=x.dtype, device=x.device)

    def component_log_densities(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; m_k, S_k), [B, K]."""
        x = x.reshape(x.shape[0], -1).to(D)
        one, zero = self._scalar(1, x), self._scalar(0, x)
        log_density, _ = self._gaussian_terms(x, one, one, zero)
        return log_density + self._constants(x.device)["log_weights"]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_densities(x), dim=-1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """p(component k | x), [B, K]."""
        return torch.softmax(self.component_log_densities(x), dim=-1)

    # -- sampling --------------------------------------------------------------------------------------------
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n draws [n, d] (float64, CPU): a component from the weights, then m_k + Q_k diag(sqrt(l_k)) z."""
        device = _device_of(generator)
        labels = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator).cpu()
        z = torch.randn(n, self.dim, dtype=D, generator=generator, device=device).cpu()
        x = self.means[labels].clone()
        if self.isotropic:
            return x + self.variances[labels, None].sqrt() * z
        for k in range(self.components):
            rows = labels == k
            if bool(rows.any()):
                x[rows] += (z[rows] * self.eigenvalues[k].sqrt()) @ self.eigenvectors[k].T
        return x


class GaussianMixturePrior(GaussianMixture):
    """A Gaussian mixture as a diffusion prior (the protocol of ``diffusion.py``): ``alphas_cumprod`` (default:
    the ADM releases' linear schedule over 1000 steps) and the exact ``eps(x, t)``.  x may be [B, d] or any
    [B, ...] with d entries per sample (so image-shaped operators work with it)."""

    def __init__(self, means, covariances, weights=None, alphas_cumprod: Optional[torch.Tensor] = None):
        super().__init__(means, covariances, weights)
        self.alphas_cumprod = (linear_alphas_cumprod() if alphas_cumprod is None
                               else torch.as_tensor(alphas_cumprod, dtype=D).detach().cpu())

    def _abar(self, t, x: torch.Tensor) -> torch.Tensor:
        """abar_t as [B, 1] (t an int, a 0-d tensor or a [B] tensor of integer steps)."""
        t = torch.as_tensor(t).detach().to("cpu", torch.long).reshape(-1)
        if t.numel() not in (1, x.shape[0]):
            raise ValueError(f"t must be one step or one per sample ({x.shape[0]}), got {t.numel()}")
        return self.alphas_cumprod[t].to(x.device).reshape(-1, 1)

    def marginal(self, t: int) -> GaussianMixture:
        """p_t as a ``GaussianMixture``: means sqrt(abar) m_k, covariances abar S_k + (1 - abar) I."""
        abar = float(self.alphas_cumprod[int(t)])
        if self.isotropic:
            return GaussianMixture(abar ** 0.5 * self.means, abar * self.variances + 1 - abar, self.weights)
        return GaussianMixture(abar ** 0.5 * self.means,
                               abar * self.covariances + (1 - abar) * torch.eye(self.dim, dtype=D), self.weights)

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """grad_x log p_t(x) = -sum_k r_k(x) C_k^-1 (x - sqrt(abar) m_k), [B, d] float64."""
        flat = x.reshape(x.shape[0], -1).to(D)
        abar = self._abar(t, flat)
        log_density, precision_diff = self._gaussian_terms(flat, abar.sqrt(), abar, 1 - abar)
        responsibilities = torch.softmax(log_density + self._constants(flat.device)["log_weights"], dim=-1)
        return -(responsibilities[..., None] * precision_diff).sum(1)

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:
        """The optimal noise prediction -sqrt(1 - abar_t) grad log p_t(x), in x's shape and dtype."""
        flat = x.reshape(x.shape[0], -1)
        abar = self._abar(t, flat)
        return (-(1 - abar).sqrt() * self.score(flat, t)).to(x.dtype).reshape(x.shape)


def _reduced_measurement(matrix: torch.Tensor, y: torch.Tensor, rtol: Optional[float]):
    """A' = diag(s_r) V_r^T [r, d] and y' = U_r^T y [r] for the r singular values > rtol * max."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    if rtol is None:                               # torch.linalg.pinv's default
        rtol = torch.finfo(D).eps * max(matrix.shape)
    rank = int((s > rtol * s.max()).sum()) if s.numel() else 0
    if rank == 0:
        raise ValueError("the measurement matrix is zero")
    return s[:rank, None] * vh[:rank], u[:, :rank].T @ y


def exact_posterior(prior: GaussianMixture, matrix, sigma_y: float, y: torch.Tensor,
                    rtol: Optional[float] = None) -> GaussianMixture:
    """p(x | y) for y = A x + sigma_y n (module docstring): a ``GaussianMixture`` with full covariances.

    ``matrix``: A [m, d] (or a ``DenseOperator``, whose matrix is used); ``y``: [m] or [1, m]; ``sigma_y`` >= 0
    (0 allowed with any rank: the posterior is then degenerate on {A x = y}); ``rtol``: singular values of A
    below rtol * max count as zero (default eps * max(m, d))."""
    if hasattr(matrix, "matrix"):
        matrix = matrix.matrix
    matrix = torch.as_tensor(matrix, dtype=D).detach().cpu()
    y = torch.as_tensor(y, dtype=D).detach().cpu().reshape(-1)
    if matrix.dim() != 2 or matrix.shape[1] != prior.dim or matrix.shape[0] != y.numel():
        raise ValueError(f"A must be [m, d={prior.dim}] with m = len(y) = {y.numel()}, got {tuple(matrix.shape)}")
    if sigma_y < 0:
        raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
    reduced, y_reduced = _reduced_measurement(matrix, y, rtol)
    rank = reduced.shape[0]
    covariances = prior.covariances                                                   # [K, d, d]
    cross = covariances @ reduced.T                                                   # S_k A'^T [K, d, r]
    gram = reduced @ cross + sigma_y ** 2 * torch.eye(rank, dtype=D)                  # G_k [K, r, r]
    gram = (gram + gram.transpose(1, 2)) / 2
    cholesky = torch.linalg.cholesky(gram)
    residual = y_reduced - prior.means @ reduced.T                                    # y' - A' m_k [K, r]
    gain = torch.cholesky_solve(cross.transpose(1, 2), cholesky).transpose(1, 2)      # S A'^T G^-1 [K, d, r]
    means = prior.means + (gain @ residual[..., None])[..., 0]
    posterior_covariances = covariances - gain @ cross.transpose(1, 2)
    whitened = torch.linalg.solve_triangular(cholesky, residual[..., None], upper=False)[..., 0]
    log_evidence = (-0.5 * (whitened * whitened).sum(-1)
                    - torch.diagonal(cholesky, dim1=-2, dim2=-1).log().sum(-1)
                    - 0.5 * rank * math.log(2 * math.pi))
    weights = torch.softmax(prior.weights.log() + log_evidence, dim=0)
    return GaussianMixture(means, posterior_covariances, weights)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 1000,
                       generator: Optional[torch.Generator] = None) -> float:
    """Sliced Wasserstein-2 distance between the empirical measures of a [N, d] and b [N, d] (equal N): the
    square root of the mean over ``projections`` random unit directions theta of
    mean_i (sort(a theta)_i - sort(b theta)_i)^2."""
    a = a.reshape(a.shape[0], -1).to(D)
    b = b.reshape(b.shape[0], -1).to(D).to(a.device)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape [N, d], got {tuple(a.shape)} and {tuple(b.shape)}")
    directions = torch.randn(a.shape[1], projections, dtype=D, generator=generator,
                             device=_device_of(generator)).to(a.device)
    directions = directions / directions.norm(dim=0, keepdim=True)
    projected_a = (a @ directions).sort(dim=0).values
    projected_b = (b @ directions).sort(dim=0).values
    return float(((projected_a - projected_b) ** 2).mean().sqrt())


def component_weights(mixture: GaussianMixture, samples: torch.Tensor) -> torch.Tensor:
    """The fraction of ``samples`` [N, d] whose most responsible component of ``mixture`` is k, [K]."""
    labels = mixture.component_log_densities(samples).argmax(-1).cpu()
    return torch.bincount(labels, minlength=mixture.components).to(D) / labels.numel()


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """0.5 sum_k |p_k - q_k| between two weight vectors."""
    return float(0.5 * (torch.as_tensor(p, dtype=D) - torch.as_tensor(q, dtype=D)).abs().sum())
