"""The fast Epps-Pulley path (powers of e^{iΔz}, Horner backward) against independent computations.

Oracles: the direct path (cos and sin at every knot, the previous implementation), float64 autograd through cos/sin
on the same grid, and `scipy.integrate.quad` of the Epps-Pulley integral itself (values and gradients), with large |z|
where a recurrence over the knots drifts most.
"""
import math
import numpy as np
import pytest
import torch
from scipy.integrate import quad
from torch.utils._python_dispatch import TorchDispatchMode
from sslmed.sigreg import epps_pulley, SIGReg


def sample(n, m, scale, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, m, generator=g, dtype=torch.float64) * scale + 0.3 * scale).to(dtype)


def value_and_grad(z, **kw):
    z = z.clone().requires_grad_()
    v = epps_pulley(z, **kw)
    v.sum().backward()
    return v.detach(), z.grad


def trapezoid_autograd64(z, t_max=3.0, n_points=17):
    "The statistic on the same grid in float64, with autograd through cos/sin (no hand-written backward)."
    z = z.double().clone().requires_grad_()
    t = torch.linspace(0, t_max, n_points, dtype=torch.float64)
    dt = t_max / (n_points - 1)
    w = torch.full_like(t, 2 * dt)
    w[0] = w[-1] = dt
    phi = torch.exp(-t * t / 2)
    a = z[..., None] * t
    v = (((a.cos().mean(0) - phi) ** 2 + a.sin().mean(0) ** 2) @ (w * phi)) * z.shape[0]
    v.sum().backward()
    return v.detach(), z.grad


def rel(a, b):
    "Largest error relative to the largest magnitude of the reference."
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t_max,n_points", [(3.0, 17), (5.0, 9), (3.0, 2), (2.0, 65)])
def test_powers_equal_direct(dtype, t_max, n_points):
    z = sample(300, 40, 1.3, dtype)
    v, g = value_and_grad(z, t_max=t_max, n_points=n_points)
    v0, g0 = value_and_grad(z, t_max=t_max, n_points=n_points, method="direct")
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert v.dtype == dtype and g.dtype == dtype
    assert rel(v, v0) < tol and rel(g, g0) < tol


@pytest.mark.parametrize("scale", [1.0, 50.0, 200.0, 1000.0])
def test_float32_large_z_against_float64(scale):
    # the phase Δz is rounded to float32 once, then multiplied k times: the same order of error as rounding t_k·z
    z = sample(512, 64, scale)
    v64, g64 = trapezoid_autograd64(z)
    errs = {}
    for method in ("powers", "direct"):
        v, g = value_and_grad(z, method=method)
        errs[method] = (((v.double() - v64).abs() / v64.abs()).max().item(), rel(g, g64))
    vp, gp = errs["powers"]
    assert vp < 1e-5, errs
    assert gp < 2e-6 * max(scale, 1.0) ** 1.0 + 1e-6, errs  # grows with |z|: the phase error is ~ulp(Δz)·k
    assert gp < 5 * errs["direct"][1] + 1e-6, errs


def quad_value_and_grad(zs, t_max):
    "N·∫|ECF(t) − φ(t)|² φ(t) dt over [−t_max, t_max] and its gradient in each sample, by scipy quadrature (float64)."
    n = len(zs)
    ecf = lambda t: np.exp(1j * t * zs).mean()
    phi = lambda t: math.exp(-t * t / 2)
    opts = dict(limit=5000, epsabs=1e-13, epsrel=1e-11)
    value = n * 2 * quad(lambda t: abs(ecf(t) - phi(t)) ** 2 * phi(t), 0, t_max, **opts)[0]
    def dfdz(i):  # d/dz_i of N·|ECF − φ|²: 2t[Im ECF·cos(t z_i) − (Re ECF − φ)·sin(t z_i)]
        f = lambda t: 2 * t * phi(t) * (ecf(t).imag * math.cos(t * zs[i]) - (ecf(t).real - phi(t)) * math.sin(t * zs[i]))
        return 2 * quad(f, 0, t_max, **opts)[0]
    return value, np.array([dfdz(i) for i in range(n)])


@pytest.mark.parametrize("scale,n_points", [(1.3, 2001), (50.0, 20001)])
def test_matches_scipy_quadrature(scale, n_points):
    # a fine trapezoid grid converges to the integral; with 20000 knots the float32 recurrence runs 20000 steps
    zs = sample(12, 1, scale, torch.float64, seed=1)
    ref_v, ref_g = quad_value_and_grad(zs[:, 0].numpy(), 3.0)
    v64, g64 = value_and_grad(zs, t_max=3.0, n_points=n_points)
    assert abs(v64.item() - ref_v) < 1e-7 * abs(ref_v)
    assert np.abs(g64[:, 0].numpy() - ref_g).max() < 1e-6 * np.abs(ref_g).max()
    v32, g32 = value_and_grad(zs.float(), t_max=3.0, n_points=n_points)
    ref32_v, ref32_g = quad_value_and_grad(zs.float().double()[:, 0].numpy(), 3.0)  # same float32 sample, exactly
    assert abs(v32.item() - ref32_v) < 1e-4 * abs(ref32_v)
    assert np.abs(g32[:, 0].double().numpy() - ref32_g).max() < 1e-3 * np.abs(ref32_g).max()


class TranscendentalCount(TorchDispatchMode):
    "Counts element evaluations of sin, cos, exp and the complex polar/exp kernels under a forward+backward."
    OPS = {"sin": 1, "cos": 1, "exp": 1, "polar": 2}
    def __init__(self):
        super().__init__()
        self.count = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__.rstrip("_")
        if name in self.OPS: self.count += self.OPS[name] * (out.numel() if isinstance(out, torch.Tensor) else 0)
        return out


def test_two_transcendental_calls_per_element():
    n, m, knots = 64, 8, 17
    for method, expected in (("powers", 2 * n * m), ("direct", 2 * 2 * n * m * (knots - 1))):
        z = torch.randn(n, m, requires_grad=True)
        with TranscendentalCount() as tc:
            epps_pulley(z, 3.0, knots, method=method).sum().backward()
        assert expected <= tc.count <= expected + 4 * knots, (method, tc.count, expected)


def test_module_under_bf16_autocast_is_float32_and_equals_direct():
    x = torch.randn(257, 48)
    sig = SIGReg(num_slices=96)
    xa = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = sig(xa, step=3)
    v.backward()  # outside autocast, as in training (inside, the projection's own backward matmul would run in bf16)
    assert v.dtype == torch.float32 and xa.grad.dtype == torch.float32
    xd = x.clone().requires_grad_()
    z = xd @ sig.directions(48, 3)
    vd = epps_pulley(z, method="direct").mean()
    vd.backward()
    assert abs(v.item() - vd.item()) < 1e-5 * vd.item()
    assert rel(xa.grad, xd.grad) < 1e-5


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="method must be one of"):
        epps_pulley(torch.randn(8, 2), method="chebyshev")


def test_blocks_split_over_threads_give_the_same_statistic():
    z = sample(3000, 40, 2.0)  # 819 rows per CPU block: four blocks, two per thread at 2 threads
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        v1, g1 = value_and_grad(z)
        torch.set_num_threads(2)
        v2, g2 = value_and_grad(z)
    finally:
        torch.set_num_threads(old)
    v0, g0 = value_and_grad(z, method="direct")
    for v, g in ((v1, g1), (v2, g2)):
        assert rel(v, v0) < 2e-5 and rel(g, g0) < 2e-5
