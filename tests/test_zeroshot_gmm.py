"""Gaussian-mixture ground truth for the zero-shot samplers (osir/methods/zeroshot/gmm.py) and the SVD samplers
DDRM and DDNM+ (osir/methods/zeroshot/svd_samplers.py), in float64 and low dimension.

References are independent of the code under test: the mixture's log-density written with
torch.distributions.MultivariateNormal and differentiated by autograd; posteriors integrated numerically on a grid
(d = 1, 2) or along the constraint line (noiseless, rank-deficient A); the sliced Wasserstein distance against the
1-D Wasserstein distance and the closed form of a pure shift; the samplers against the measurement (noiseless:
A x = y), against the moment recursion of their own Gaussian updates for a Gaussian prior (exact first and second
moments, per spectral coordinate) and against exact posterior samples."""
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from osir.core.registry import ZERO_SHOT_SAMPLERS
from osir.methods.zeroshot.diffusion import linear_alphas_cumprod, timesteps
from osir.methods.zeroshot.gmm import (GaussianMixture, GaussianMixturePrior, component_weights, exact_posterior,
                                       sliced_wasserstein, total_variation)
from osir.methods.zeroshot.operators import DenseOperator, Identity, Inpainting
from osir.methods.zeroshot.svd_samplers import _travel_schedule, ddnm, ddrm

D = torch.float64


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_covariances(k: int, d: int, g: torch.Generator) -> torch.Tensor:
    factors = torch.randn(k, d, d, dtype=D, generator=g) / math.sqrt(d)
    return factors @ factors.transpose(1, 2) + 0.2 * torch.eye(d, dtype=D)


def reference_log_density(x, means, covariances, weights):
    """log sum_k w_k N(x; m_k, C_k) with torch.distributions (independent of gmm.py)."""
    parts = [MultivariateNormal(means[k], covariance_matrix=covariances[k]).log_prob(x) + weights[k].log()
             for k in range(means.shape[0])]
    return torch.logsumexp(torch.stack(parts, -1), -1)


# -- the prior's exact eps ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("isotropic", [False, True])
def test_eps_is_minus_sqrt_one_minus_abar_times_the_autograd_score(isotropic):
    g = generator(0)
    k, d = 3, 4
    means = 2 * torch.randn(k, d, dtype=D, generator=g)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=D)
    if isotropic:
        variances = torch.tensor([0.3, 1.0, 0.6], dtype=D)
        covariances = variances[:, None, None] * torch.eye(d, dtype=D)
        prior = GaussianMixturePrior(means, variances, weights)
    else:
        covariances = random_covariances(k, d, g)
        prior = GaussianMixturePrior(means, covariances, weights)
    abar_all = linear_alphas_cumprod()
    for t in (0, 40, 300, 999):
        abar = abar_all[t]
        x = (abar.sqrt() * means[torch.arange(6) % k] + torch.randn(6, d, dtype=D, generator=g)).requires_grad_()
        log_density = reference_log_density(x, abar.sqrt() * means,
                                            abar * covariances + (1 - abar) * torch.eye(d, dtype=D), weights)
        score, = torch.autograd.grad(log_density.sum(), x)
        expected = -(1 - abar).sqrt() * score
        torch.testing.assert_close(prior.eps(x.detach(), t), expected, rtol=1e-9, atol=1e-11)
        # per-sample steps, image-shaped input, float32 in -> float32 out
        steps = torch.full((6,), t)
        torch.testing.assert_close(prior.eps(x.detach().reshape(6, 2, 2), steps).reshape(6, d), expected,
                                   rtol=1e-9, atol=1e-11)
        assert prior.eps(x.detach().float(), t).dtype == torch.float32
        torch.testing.assert_close(prior.marginal(t).log_prob(x.detach()), log_density.detach(), rtol=1e-10,
                                   atol=1e-10)


def test_eps_is_differentiable_for_dps():
    g = generator(1)
    prior = GaussianMixturePrior(torch.randn(2, 3, dtype=D, generator=g), torch.tensor([0.5, 1.5], dtype=D))
    x = torch.randn(4, 3, dtype=D, generator=g, requires_grad=True)
    gradient, = torch.autograd.grad(prior.eps(x, 500).square().sum(), x)
    step = 1e-6
    direction = torch.randn(4, 3, dtype=D, generator=g)
    finite = ((prior.eps(x.detach() + step * direction, 500).square().sum()
               - prior.eps(x.detach() - step * direction, 500).square().sum()) / (2 * step))
    torch.testing.assert_close((gradient * direction).sum(), finite, rtol=1e-6, atol=1e-8)


def test_samples_have_the_mixture_moments():
    g = generator(2)
    k, d = 3, 3
    mixture = GaussianMixture(3 * torch.randn(k, d, dtype=D, generator=g), random_covariances(k, d, g),
                              torch.tensor([0.1, 0.6, 0.3], dtype=D))
    x = mixture.sample(20000, g)
    # law of total expectation / covariance, written here independently of GaussianMixture.mean/covariance
    mean = (mixture.weights[:, None] * mixture.means).sum(0)
    covariance = sum(w * (c + torch.outer(m - mean, m - mean))
                     for w, m, c in zip(mixture.weights, mixture.means, mixture.covariances))
    torch.testing.assert_close(mixture.mean(), mean)
    torch.testing.assert_close(mixture.covariance(), covariance)
    assert (x.mean(0) - mean).abs().max() < 5 * covariance.diagonal().max().sqrt() / math.sqrt(20000)
    assert (torch.cov(x.T) - covariance).abs().max() < 0.05 * covariance.abs().max()


# -- exact posteriors against numerical integration ------------------------------------------------------------

def grid_moments(points, log_unnormalised_parts, cell):
    """Posterior weights, mean and covariance by quadrature: parts [P, K] = log w_k N_k(x) + log L(x)."""
    top = log_unnormalised_parts.max()
    parts = (log_unnormalised_parts - top).exp() * cell
    total = parts.sum()
    density = parts.sum(-1) / total
    mean = density @ points
    centred = points - mean
    covariance = (density[:, None] * centred).T @ centred
    return parts.sum(0) / total, mean, covariance


def test_posterior_d1_matches_quadrature():
    means = torch.tensor([[-2.0], [0.5], [3.0]], dtype=D)
    variances = torch.tensor([0.3, 0.5, 0.2], dtype=D)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=D)
    prior = GaussianMixture(means, variances, weights)
    a, sigma_y, y = 1.5, 0.5, torch.tensor([1.0], dtype=D)
    posterior = exact_posterior(prior, torch.tensor([[a]], dtype=D), sigma_y, y)
    x = torch.linspace(-12, 12, 240001, dtype=D)[:, None]
    log_prior_parts = (weights.log() - 0.5 * (x - means[:, 0]) ** 2 / variances
                       - 0.5 * torch.log(2 * math.pi * variances))
    log_likelihood = -0.5 * (y - a * x[:, 0]) ** 2 / sigma_y ** 2
    expected_weights, mean, covariance = grid_moments(x, log_prior_parts + log_likelihood[:, None], 1.0)
    torch.testing.assert_close(posterior.weights, expected_weights, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(posterior.mean(), mean, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(posterior.covariance(), covariance, rtol=1e-7, atol=1e-10)


def test_posterior_d2_rank_deficient_noisy_matches_quadrature():
    """A with two dependent rows and a y outside range(A): the reduction to A's independent rows is exact."""
    g = generator(3)
    means = torch.tensor([[-1.5, 0.5], [1.0, 1.0], [0.5, -2.0]], dtype=D)
    covariances = random_covariances(3, 2, g)
    weights = torch.tensor([0.3, 0.3, 0.4], dtype=D)
    prior = GaussianMixture(means, covariances, weights)
    matrix = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=D)
    sigma_y, y = 0.7, torch.tensor([1.0, 2.5], dtype=D)
    posterior = exact_posterior(prior, matrix, sigma_y, y)
    axis = torch.linspace(-9, 9, 901, dtype=D)
    points = torch.cartesian_prod(axis, axis)
    log_prior_parts = torch.stack([MultivariateNormal(means[k], covariances[k]).log_prob(points)
                                   for k in range(3)], -1) + weights.log()
    log_likelihood = -0.5 * ((points @ matrix.T - y) ** 2).sum(-1) / sigma_y ** 2
    expected_weights, mean, covariance = grid_moments(points, log_prior_parts + log_likelihood[:, None], 1.0)
    torch.testing.assert_close(posterior.weights, expected_weights, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(posterior.mean(), mean, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(posterior.covariance(), covariance, rtol=1e-5, atol=1e-8)


def test_posterior_noiseless_rank_deficient_is_the_prior_on_the_constraint_line():
    g = generator(4)
    means = torch.tensor([[-1.5, 0.5], [1.0, 1.0], [0.5, -2.0]], dtype=D)
    covariances = random_covariances(3, 2, g)
    weights = torch.tensor([0.3, 0.3, 0.4], dtype=D)
    prior = GaussianMixture(means, covariances, weights)
    matrix = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=D)
    y = matrix @ torch.tensor([0.3, -0.4], dtype=D)
    posterior = exact_posterior(prior, matrix, 0.0, y)
    # {x : x1 + 2 x2 = -0.5} = p + tau n
    p = torch.tensor([-0.1, -0.2], dtype=D)
    n = torch.tensor([2.0, -1.0], dtype=D) / math.sqrt(5)
    tau = torch.linspace(-15, 15, 300001, dtype=D)
    points = p + tau[:, None] * n
    log_parts = torch.stack([MultivariateNormal(means[k], covariances[k]).log_prob(points) for k in range(3)],
                            -1) + weights.log()
    expected_weights, mean, covariance = grid_moments(points, log_parts, 1.0)
    torch.testing.assert_close(posterior.weights, expected_weights, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(posterior.mean(), mean, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(posterior.covariance(), covariance, rtol=1e-7, atol=1e-10)
    samples = posterior.sample(500, g)
    assert (samples @ matrix.T - y).abs().max() < 1e-9
    # the noiseless posterior is the sigma_y -> 0 limit; samples' responsibilities use the density on the line
    nearly = exact_posterior(prior, matrix, 1e-6, y)
    torch.testing.assert_close(nearly.weights, posterior.weights, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(nearly.mean(), posterior.mean(), rtol=1e-6, atol=1e-9)
    assert total_variation(component_weights(posterior, samples), component_weights(nearly, samples)) < 0.01


# -- sliced Wasserstein, component weights ---------------------------------------------------------------------

def test_sliced_wasserstein_in_one_dimension_is_the_wasserstein_distance():
    g = generator(5)
    a, b = torch.randn(300, 1, dtype=D, generator=g), 2 + 3 * torch.rand(300, 1, dtype=D, generator=g)
    w2 = ((a[:, 0].sort().values - b[:, 0].sort().values) ** 2).mean().sqrt()
    assert sliced_wasserstein(a, b, 7, g) == pytest.approx(float(w2), rel=1e-12)


def test_sliced_wasserstein_of_a_shift_is_its_norm_over_sqrt_d():
    g = generator(6)
    d = 4
    delta = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=D)
    expected = float(delta.square().sum() / d)               # E_theta (theta . delta)^2 = |delta|^2 / d
    a = torch.randn(200, d, dtype=D, generator=g)
    assert sliced_wasserstein(a, a + delta, 20000, g) ** 2 == pytest.approx(expected, rel=0.03)
    a, b = torch.randn(2000, d, dtype=D, generator=g), torch.randn(2000, d, dtype=D, generator=g)
    same = sliced_wasserstein(a, b, 500, g)
    assert same < 0.1 * math.sqrt(expected)
    assert sliced_wasserstein(a, b + delta, 2000, g) ** 2 == pytest.approx(expected, rel=0.1)


def test_component_weights_of_separated_samples_are_the_weights():
    g = generator(7)
    weights = torch.tensor([0.15, 0.35, 0.5], dtype=D)
    mixture = GaussianMixture(torch.tensor([[-10.0, 0.0], [0.0, 10.0], [10.0, 0.0]], dtype=D), 1.0, weights)
    counts = component_weights(mixture, mixture.sample(4000, g))
    assert total_variation(counts, weights) < 0.03
    assert total_variation(torch.tensor([1.0, 0, 0]), torch.tensor([0, 0.5, 0.5])) == 1.0


def test_dense_operator_svd_and_pseudo_inverse():
    g = generator(8)
    matrix = torch.randn(5, 2, dtype=D, generator=g) @ torch.randn(2, 7, dtype=D, generator=g)
    operator = DenseOperator(matrix)
    assert operator.rank == 2 and operator.singulars().numel() == 2
    x = torch.randn(3, 7, dtype=D, generator=g)
    s = operator.singulars()
    torch.testing.assert_close(operator.u(operator._pad(s * operator.vt(x)[:, :2], 5)), x @ matrix.T)
    torch.testing.assert_close(operator.pinv(x @ matrix.T), x @ matrix.T @ torch.linalg.pinv(matrix).T)
    torch.testing.assert_close(operator.adjoint(x @ matrix.T), x @ matrix.T @ matrix)


# -- DDRM and DDNM+ --------------------------------------------------------------------------------------------

def problem(seed, d=8, k=3, rows=4, rank=3, sigma_y=0.1, mean_scale=1.0):
    g = generator(seed)
    prior = GaussianMixturePrior(mean_scale * torch.randn(k, d, dtype=D, generator=g),
                                 0.2 + 0.8 * torch.rand(k, dtype=D, generator=g),
                                 torch.rand(k, dtype=D, generator=g) + 0.5)
    matrix = (torch.randn(rows, rank, dtype=D, generator=g) @ torch.randn(rank, d, dtype=D, generator=g)
              / math.sqrt(rank))
    operator = DenseOperator(matrix, sigma_y)
    y = operator.measure(prior.sample(1, g), g)
    return g, prior, matrix, operator, y


def test_samplers_are_registered():
    assert ZERO_SHOT_SAMPLERS.get("ddrm") is ddrm
    assert ZERO_SHOT_SAMPLERS.get("ddnm") is ddnm


@pytest.mark.parametrize("sampler", [ddrm, ddnm])
def test_noiseless_samples_satisfy_the_measurement(sampler):
    g, prior, matrix, operator, y = problem(9, sigma_y=0.0)
    x = sampler(prior, operator, y.expand(64, -1), steps=20, generator=g)
    assert x.shape == (64, 8)
    residual = (x @ matrix.T - y).norm(dim=1) / y.norm()
    assert residual.max() <= 1e-5
    # an image operator: inpainting of 3 x 4 x 4 images with a mixture prior on the 48 pixels
    mask = (torch.rand(4, 4, generator=g) > 0.5).to(D)
    inpaint = Inpainting(mask)
    image_prior = GaussianMixturePrior(torch.randn(2, 48, dtype=D, generator=g), torch.tensor([0.5, 1.0]))
    truth = image_prior.sample(1, g).reshape(1, 3, 4, 4)
    x = sampler(image_prior, inpaint, inpaint(truth).expand(5, -1, -1, -1), steps=10, generator=g)
    assert x.shape == (5, 3, 4, 4)
    torch.testing.assert_close(x * mask, (truth * mask).expand(5, -1, -1, -1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("sampler", [ddrm, ddnm])
def test_identity_without_noise_returns_y(sampler):
    g = generator(10)
    prior = GaussianMixturePrior(torch.randn(2, 12, dtype=D, generator=g), torch.tensor([0.4, 0.9]))
    y = torch.randn(3, 3, 2, 2, dtype=D, generator=g)
    torch.testing.assert_close(sampler(prior, Identity((3, 2, 2)), y, steps=15, generator=g), y, rtol=0,
                               atol=1e-12)
    flat = y.reshape(3, 12)
    torch.testing.assert_close(sampler(prior, DenseOperator(torch.eye(12)), flat, steps=15, generator=g), flat,
                               rtol=0, atol=1e-12)


def affine_moments(coefficients, mean, variance):
    """Mean and variance after x' = alpha x + beta + gamma z, z ~ N(0, 1)."""
    alpha, beta, gamma = coefficients
    return alpha * mean + beta, alpha ** 2 * variance + gamma ** 2


def ddrm_moments(mu, v, y_bar, y_noise, observed, grid, abar_all, eta, eta_b):
    """Exact law of one spectral coordinate of DDRM's output for the prior N(mu, v) on it (Eqs. 7-8 are affine
    Gaussian maps when Tweedie's estimate is mu + v / (v + sigma^2) (x - mu), x = x_t / sqrt(abar))."""
    sigma = [math.sqrt((1 - float(abar_all[t])) / float(abar_all[t])) for t in grid] + [0.0]
    if observed and sigma[0] > y_noise:
        mean, variance = y_bar, sigma[0] ** 2 - y_noise ** 2
    else:
        mean, variance = 0.0, sigma[0] ** 2
    for now, after in zip(sigma[:-1], sigma[1:]):
        kappa = v / (v + now ** 2)                                    # x_theta = kappa x + (1 - kappa) mu
        if not observed:
            r = math.sqrt(1 - eta ** 2) * after / now
            step = (kappa + r * (1 - kappa), (1 - kappa) * mu * (1 - r), eta * after)
        elif after < y_noise:
            q = math.sqrt(1 - eta ** 2) * after / y_noise
            step = (kappa * (1 - q), (1 - kappa) * mu * (1 - q) + q * y_bar, eta * after)
        else:
            step = ((1 - eta_b) * kappa, (1 - eta_b) * (1 - kappa) * mu + eta_b * y_bar,
                    math.sqrt(after ** 2 - eta_b ** 2 * y_noise ** 2))
        mean, variance = affine_moments(step, mean, variance)
    return mean, variance


def ddnm_moments(mu, v, y_bar, y_noise, observed, grid, abar_all, eta):
    """The same for DDNM+ (Eqs. 12, 17-19 with DDIM's step), in the variance-preserving coordinates."""
    abars = [float(abar_all[t]) for t in grid] + [1.0]
    mean, variance = 0.0, 1.0
    for abar, abar_next in zip(abars[:-1], abars[1:]):
        root = math.sqrt(abar)
        kappa = root * v / (abar * v + 1 - abar)                       # x0 = kappa x + offset
        offset = mu - kappa * root * mu
        eps_alpha, eps_beta = (1 - root * kappa) / math.sqrt(1 - abar), -root * offset / math.sqrt(1 - abar)
        a, level = math.sqrt(abar_next), math.sqrt(1 - abar_next)
        lam, budget = 0.0, level
        if observed:
            lam = 1.0 if level >= a * y_noise else level / (a * y_noise)
            budget = math.sqrt(max(level ** 2 - (a * lam * y_noise) ** 2, 0.0))
        keep = math.sqrt(1 - eta ** 2) * budget
        step = (a * (1 - lam) * kappa + keep * eps_alpha,
                a * ((1 - lam) * offset + lam * y_bar) + keep * eps_beta, eta * budget)
        mean, variance = affine_moments(step, mean, variance)
    return mean, variance


def test_moment_recursion_reference_is_right_where_it_is_known():
    """The references' own check: with eta = 0 (DDIM's ODE) and 1000 steps an unobserved coordinate ends with the
    prior's law (DDIM is exact in that limit), and a noiseless observed one ends at ybar."""
    abar_all = linear_alphas_cumprod()
    grid = timesteps(1000, 1000)
    for moments in (lambda *a: ddrm_moments(*a, eta=0.0, eta_b=1.0), lambda *a: ddnm_moments(*a, eta=0.0)):
        mean, variance = moments(0.8, 0.5, 0.0, 0.0, False, grid, abar_all)
        assert mean == pytest.approx(0.8, abs=0.01) and variance == pytest.approx(0.5, rel=0.01)
        mean, variance = moments(0.8, 0.5, -0.3, 0.0, True, grid, abar_all)
        assert mean == pytest.approx(-0.3, abs=1e-12) and variance == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("sigma_y", [0.0, 0.2])
@pytest.mark.parametrize("name", ["ddrm", "ddnm"])
def test_gaussian_prior_output_has_the_exact_moments_of_the_updates(name, sigma_y):
    """With a Gaussian prior N(m, v I) every DDRM / DDNM+ update is an affine Gaussian map per spectral coordinate:
    the samples' mean and variance of every coordinate must equal the closed-form recursion (to sampling error)."""
    g = generator(11)
    d, n, steps, v = 6, 20000, 20, 0.7
    mean_vector = torch.randn(1, d, dtype=D, generator=g)
    prior = GaussianMixturePrior(mean_vector, torch.tensor([v], dtype=D))
    matrix = torch.randn(4, 3, dtype=D, generator=g) @ torch.randn(3, d, dtype=D, generator=g) / 2
    operator = DenseOperator(matrix, sigma_y)
    y = operator.measure(prior.sample(1, g), g)
    sampler = ZERO_SHOT_SAMPLERS.get(name)
    coordinates = operator.vt(sampler(prior, operator, y.expand(n, -1), steps=steps, generator=g))
    s = operator.singulars()
    k = s.numel()
    mu = operator.vt(mean_vector)[0]
    y_bar = operator.ut(y)[0, :k] / s
    grid = timesteps(1000, steps)
    for i in range(d):
        observed = i < k
        arguments = (float(mu[i]), v, float(y_bar[i]) if observed else 0.0,
                     sigma_y / float(s[i]) if observed else 0.0, observed, grid, prior.alphas_cumprod)
        mean, variance = (ddrm_moments(*arguments, eta=0.85, eta_b=1.0) if name == "ddrm"
                          else ddnm_moments(*arguments, eta=0.85))
        sample = coordinates[:, i]
        if variance < 1e-20:
            assert float(sample.std()) < 1e-9 and float(sample.mean()) == pytest.approx(mean, abs=1e-9)
            continue
        assert abs(float(sample.mean()) - mean) < 5 * math.sqrt(variance / n), (i, float(sample.mean()), mean)
        assert float(sample.var()) == pytest.approx(variance, rel=5 * math.sqrt(2 / n)), (i, variance)


@pytest.mark.parametrize("seed", [0, 1])
def test_samplers_move_towards_the_exact_posterior(seed):
    """d = 8, K = 3, A 4 x 8 of rank 3, sigma_y = 0.1: DDRM's and DDNM+'s samples are closer to exact posterior
    samples than prior samples are, by a factor 2 at least (measured: ratios 0.12-0.20 on these seeds, 50 steps),
    and still farther than a second exact draw is."""
    g, prior, matrix, operator, y = problem(seed)
    posterior = exact_posterior(prior, matrix, 0.1, y)
    n = 1000
    reference = posterior.sample(n, g)
    floor = sliced_wasserstein(posterior.sample(n, g), reference, 500, g)
    from_prior = sliced_wasserstein(prior.sample(n, g), reference, 500, g)
    for sampler in (ddrm, ddnm):
        distance = sliced_wasserstein(sampler(prior, operator, y.expand(n, -1), steps=50, generator=g), reference,
                                      500, g)
        assert distance < 0.5 * from_prior, (sampler.__name__, distance, from_prior)
        assert distance > floor


def test_time_travel_schedule_and_consistency():
    moves = _travel_schedule(10, 2, 3)
    assert [m for m in moves if m[1] > m[0]][-1] == (9, 10)
    assert sum(1 for m in moves if m[1] > m[0]) == 10 + 4 * 2 * 2   # travel at 2, 4, 6, 8; twice; 2 steps back
    assert _travel_schedule(5, 1, 1) == [(i, i + 1) for i in range(5)]
    calls = []
    g, prior, matrix, operator, y = problem(12, sigma_y=0.0)

    class Counting:
        alphas_cumprod = prior.alphas_cumprod

        def eps(self, x, t):
            calls.append(t)
            return prior.eps(x, t)

    x = ddnm(Counting(), operator, y.expand(16, -1), steps=10, generator=g, travel_length=2, travel_repeat=3)
    assert len(calls) == 26
    assert ((x @ matrix.T - y).norm(dim=1) / y.norm()).max() <= 1e-5
