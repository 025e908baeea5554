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
