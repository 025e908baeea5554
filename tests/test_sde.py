"""Mean-reverting SDE maths against closed forms and Monte Carlo."""
import math

import pytest
import torch

from osir.diffusion import MeanRevertingSDE
from osir.diffusion.samplers import sample_posterior, sample_reverse_ode, sample_reverse_sde


@pytest.fixture(params=["cosine", "linear", "constant"])
def sde(request):
    return MeanRevertingSDE(max_sigma=10 / 255, T=100, schedule=request.param, eps=0.005)


def test_dt_makes_terminal_mean_eps(sde):
    assert math.exp(-float(sde.theta_bar[-1])) == pytest.approx(0.005, rel=1e-9)
    assert float(sde.theta_bar[0]) == 0.0 and sde.std(0) == 0.0
    assert sde.std(sde.T) == pytest.approx(10 / 255 * math.sqrt(1 - 0.005 ** 2), rel=1e-9)


def test_marginals_match_monte_carlo_simulation(sde):
    """Simulate dx = theta (mu - x) dt + sigma dw with 20 Euler-Maruyama sub-steps per step."""
    torch.manual_seed(0)
    n, x0, mu = 20_000, 0.8, 0.2
    x = torch.full((n,), x0, dtype=torch.float64)
    sub = 20
    for t in range(1, 61):
        theta_dt = (float(sde.theta_bar[t]) - float(sde.theta_bar[t - 1])) / sub
        for _ in range(sub):
            x = x + theta_dt * (mu - x) + math.sqrt(2 * sde.lam ** 2 * theta_dt) * torch.randn(n, dtype=torch.float64)
    t = 60
    mean = sde.mean(torch.tensor(x0), torch.tensor(mu), t)
    assert float(x.mean()) == pytest.approx(float(mean), abs=4 * sde.lam / math.sqrt(n) + 1e-4)
    assert float(x.std()) == pytest.approx(sde.std(t), rel=0.025)


def test_posterior_at_first_step_returns_x0(sde):
    x0, mu, xt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert torch.allclose(sde.posterior_mean(xt, x0, mu, 1, 0), x0, atol=1e-6)
    assert sde.posterior_std(1, 0) == 0.0


def test_posterior_mean_is_the_gaussian_conditional_mean(sde):
    """Regress x_s on x_t by Monte Carlo over the joint; compare slope/intercept to Eq. 8-10."""
    torch.manual_seed(1)
    n, x0, mu, t, s = 200_000, 0.7, 0.3, 40, 37
    xs = sde.mean(torch.tensor(x0), torch.tensor(mu), s) + sde.std(s) * torch.randn(n, dtype=torch.float64)
    delta = float(sde.theta_bar[t] - sde.theta_bar[s])
    xt = mu + (xs - mu) * math.exp(-delta) + sde.lam * math.sqrt(1 - math.exp(-2 * delta)) * torch.randn(n, dtype=torch.float64)
    cov = torch.cov(torch.stack([xt, xs]))
    slope = float(cov[0, 1] / cov[0, 0])
    intercept = float(xs.mean() - slope * xt.mean())
    probe = torch.tensor([0.2, 0.5], dtype=torch.float64)
    expected = sde.posterior_mean(probe, torch.tensor(x0, dtype=torch.float64), torch.tensor(mu, dtype=torch.float64), t, s)
    assert torch.allclose(intercept + slope * probe, expected, atol=2e-4)
    residual = xs - (intercept + slope * xt)
    assert float(residual.std()) == pytest.approx(sde.posterior_std(t, s), rel=0.01)


def test_tensor_timesteps_match_int_timesteps(sde):
    x0, mu, noise = torch.rand(3, 3, 4, 4), torch.rand(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    t = torch.tensor([1, 50, 100])
    batched = sde.q_sample(x0, mu, t, noise)
    for i, ti in enumerate(t.tolist()):
        assert torch.allclose(batched[i], sde.q_sample(x0[i:i + 1], mu[i:i + 1], ti, noise[i:i + 1])[0], atol=1e-6)
    assert torch.allclose(sde.x0_from_noise(batched, mu, noise, t), x0, atol=1e-4)


@pytest.mark.parametrize("steps", [100, 10])
def test_samplers_with_oracle_noise_recover_x0(steps):
    """With the exact noise of a single known x0, posterior sampling returns x0 and the ODE/SDE land near it."""
    sde = MeanRevertingSDE(max_sigma=10 / 255, T=100)
    torch.manual_seed(2)
    x0, mu = torch.rand(1, 3, 8, 8, dtype=torch.float64), torch.rand(1, 3, 8, 8, dtype=torch.float64)

    def oracle(x, mu_, t):
        return (x - sde.mean(x0, mu_, t)) / sde.std(t)

    g = torch.Generator().manual_seed(0)
    steps_list = sde.timesteps(steps)
    assert steps_list[0] == 100 and steps_list[-1] == 0 and len(steps_list) == steps + 1
    start = sde.prior_sample(mu, g)
    assert torch.allclose(sample_posterior(oracle, start, mu, sde, steps_list, g), x0, atol=1e-6)
    assert (sample_reverse_ode(oracle, start, mu, sde, steps_list) - x0).abs().max() < 0.05
    assert (sample_reverse_sde(oracle, start, mu, sde, steps_list, g) - x0).abs().mean() < 0.05


def test_bad_timesteps_are_refused():
    sde = MeanRevertingSDE(0.04, T=10)
    with pytest.raises(ValueError, match="steps must be in"):
        sde.timesteps(11)
    with pytest.raises(ValueError, match="decrease strictly"):
        sample_posterior(lambda x, m, t: x, torch.zeros(1), torch.zeros(1), sde, [10, 5, 5, 0])


def test_posterior_extras_eta_zero_is_deterministic_and_clip_bounds_x0():
    sde = MeanRevertingSDE(max_sigma=25 / 255, T=50, eps=0.05)
    x0, mu = torch.rand(1, 3, 8, 8, dtype=torch.float64), torch.rand(1, 3, 8, 8, dtype=torch.float64)
    oracle = lambda x, mu_, t: (x - sde.mean(x0, mu_, t)) / sde.std(t)  # noqa: E731
    start = sde.prior_sample(mu, torch.Generator().manual_seed(0))
    ts = sde.timesteps(5)
    a = sample_posterior(oracle, start, mu, sde, ts, torch.Generator().manual_seed(1), eta=0.0)
    b = sample_posterior(oracle, start, mu, sde, ts, torch.Generator().manual_seed(2), eta=0.0)
    assert torch.equal(a, b) and torch.allclose(a, x0, atol=1e-6)
    seen = []
    wild = lambda x, mu_, t: torch.full_like(x, 50.0)  # noqa: E731  (a wildly wrong network)
    sample_posterior(wild, start, mu, sde, ts, clip_denoised=(0.0, 1.0), eta=0.0,
                     callback=lambda s: seen.append(float(s["x"].abs().max())))
    unclipped = []
    sample_posterior(wild, start, mu, sde, ts, eta=0.0, callback=lambda s: unclipped.append(float(s["x"].abs().max())))
    assert max(seen) < 1.5 and max(unclipped) > 5.0


@pytest.mark.parametrize("sampler", [sample_reverse_sde, sample_reverse_ode, sample_posterior])
def test_samplers_pass_extra_args_and_report_the_x0_estimate(sampler):
    """extra_args reach the network (DA-CLIP's embeddings, say) and the callback gets the step's
    x0 estimate, x0 = mu + (x_t - mu - sigma_t eps) exp(thetabar_t)."""
    sde = MeanRevertingSDE(max_sigma=10 / 255, T=20)
    mu = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    calls, reports = [], []

    def model(x, mu_, t, *, embedding):
        calls.append(embedding)
        return torch.full_like(x, 0.1) * embedding

    start = sde.prior_sample(mu, torch.Generator().manual_seed(0))
    states = [start]
    sampler(model, start, mu, sde, sde.timesteps(4), torch.Generator().manual_seed(1),
            callback=lambda d: (reports.append(d), states.append(d["x"])), extra_args={"embedding": 2.0})
    assert calls == [2.0] * 4 and [r["i"] for r in reports] == [0, 1, 2, 3]
    for r, x_t in zip(reports, states):
        expected = mu + (x_t - mu - sde.std(r["t"]) * 0.2) * math.exp(float(sde.theta_bar[r["t"]]))
        assert torch.allclose(r["x0"], expected, atol=1e-9)


# -- the release's sampling functions (issue 21, point 10) ----------------------------------------------
# Reference outputs of the release's own ``reverse_sde`` / ``reverse_posterior`` / ``reverse_ode`` and
# ``noise_state`` (codes/utils/sde_utils.py of Algolzw/image-restoration-sde; the copy in daclip-uir gives
# the same numbers), run unmodified in float32 on: IRSDE(max_sigma=50, T=10, schedule='cosine', eps=0.1),
# mu = linspace(0.1, 0.9, 12) as 1x3x2x2, the noise model ``_smooth_noise`` below, torch.manual_seed(7)
# before noise_state(mu).  CPU draws of the global generator after manual_seed(7) are those of a
# torch.Generator seeded 7, and both draw the start noise first, then one draw per step after the network
# call.  osir matched them to 9.5e-7 (float32 rounding; 3e-11 against the same code in float64).
RELEASE_T10 = {
    "sde": [-0.1336805, 0.3837466, -0.9390935, -0.4295668, 0.17247, -1.0215892, 0.8829426, 1.0019407,
            0.7817286, 0.8551837, 0.8216645, 1.4657304],
    "posterior": [0.0356371, -0.4942982, 0.8155999, 0.3057474, 3.0653424, 1.7618799, 0.7585127, 2.8459201,
                  1.3049845, -0.4308993, 0.8959731, 0.5109348],
    "ode": [0.0638618, 0.1272112, 0.2108312, -0.4411077, 1.5041262, 0.375102, 0.5672408, 1.5862725,
            0.7443339, -0.1601373, 0.8536716, 0.8991979],
}


def _smooth_noise(x, mu, t):
    return torch.tanh(3 * (x - mu) / 0.2) * math.sqrt(t / 10) + 0.3 * torch.sin(7 * mu)


@pytest.mark.parametrize("name, sampler", [("sde", sample_reverse_sde), ("posterior", sample_posterior),
                                           ("ode", sample_reverse_ode)])
def test_samplers_reproduce_the_release_on_the_same_draws(name, sampler):
    sde = MeanRevertingSDE(max_sigma=50 / 255, T=10, schedule="cosine", eps=0.1)
    mu = torch.linspace(0.1, 0.9, 12).view(1, 3, 2, 2)
    g = torch.Generator().manual_seed(7)
    out = sampler(_smooth_noise, sde.prior_sample(mu, g), mu, sde, sde.timesteps(), g)
    assert torch.allclose(out.flatten(), torch.tensor(RELEASE_T10[name]), rtol=0, atol=5e-6)


def test_start_state_is_mu_plus_lambda_z():
    """x_T = mu + lambda z (the release's noise_state), not mu + sigmabar_T z = mu + lambda sqrt(1 - eps^2) z
    (0.5 % smaller for eps = 0.1)."""
    sde = MeanRevertingSDE(max_sigma=30 / 255, T=20, eps=0.1)
    mu = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    z = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    start = sde.prior_sample(mu, torch.Generator().manual_seed(3))
    assert torch.allclose(start, mu + 30 / 255 * z, rtol=0, atol=1e-15)


def test_reverse_sde_last_step_adds_sigma1_sqrt_dt_noise_unless_disabled():
    """With a network predicting zero noise (score 0), the step t = 1 -> 0 is
    x_0 = x_1 - theta_1 dt (mu - x_1) - sigma_1 sqrt(dt) z with sigma_1^2 = 2 lambda^2 theta_1 (IR-SDE Eq. 4)
    and z the step's draw: its added variance is sigma_1^2 dt, ~(0.94/255)^2 for lambda = 50/255, T = 100."""
    sde = MeanRevertingSDE(max_sigma=50 / 255, T=100, eps=0.005)
    theta1_dt = float(sde.thetas[1]) * sde.dt                  # theta_1 dt from the schedule itself
    var = 2 * sde.lam ** 2 * theta1_dt
    assert math.sqrt(var) * 255 == pytest.approx(0.939, abs=1e-3)
    mu, x1 = torch.rand(1, 3, 64, 64, dtype=torch.float64), torch.rand(1, 3, 64, 64, dtype=torch.float64)
    zero = lambda x, mu_, t: torch.zeros_like(x)  # noqa: E731
    drift_only = x1 - theta1_dt * (mu - x1)
    out = sample_reverse_sde(zero, x1, mu, sde, [1, 0], torch.Generator().manual_seed(5))
    z = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(out, drift_only - math.sqrt(var) * z, rtol=0, atol=1e-12)
    assert float((out - drift_only).var()) == pytest.approx(var, rel=0.05)
    quiet = sample_reverse_sde(zero, x1, mu, sde, [1, 0], torch.Generator().manual_seed(5), last_step_noise=False)
    assert torch.allclose(quiet, drift_only, rtol=0, atol=1e-12)
