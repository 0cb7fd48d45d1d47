"""The PDE tasks: exact heat decay, a Cole-Hopf exact Burgers solution, invariants, convergence."""

import numpy as np
import pytest

from transmodal.errors import ConfigError, DataError
from transmodal.tasks import rel_l2
from transmodal.data.pde import (
    gaussian_random_field,
    make_burgers,
    make_darcy,
    make_heat,
    solve_burgers,
    solve_darcy,
    solve_heat,
)

GRID = 128
X = 2 * np.pi * np.arange(GRID) / GRID  # periodic grid on [0, 2pi)


def test_heat_single_sine_mode_decays_analytically():
    nu, t, k = 0.1, 0.7, 3
    u = solve_heat(np.sin(k * X), t, nu)
    np.testing.assert_allclose(u, np.exp(-nu * k**2 * t) * np.sin(k * X), atol=1e-13)


def test_make_heat_targets_are_the_exact_solution():
    task = make_heat(n_train=8, n_test=4, t_final=0.5, viscosity=0.1, seed=1)
    expected = solve_heat(task.x_train[:, 0].astype(np.float64), 0.5, 0.1)
    np.testing.assert_allclose(task.y_train[:, 0], expected, rtol=0, atol=1e-6)  # float32 storage


def test_burgers_matches_cole_hopf_exact_solution():
    # phi = a + b exp(-nu k^2 t) cos(kx) solves the heat equation; u = -2 nu phi_x / phi then
    # solves viscous Burgers exactly (Cole-Hopf), and is periodic and smooth for a > |b|.
    nu, a, b, k, t = 0.1, 1.0, 0.95, 1, 1.0  # max|u0| ~ 0.6

    def exact(time):
        decay = b * np.exp(-nu * k**2 * time)
        return 2 * nu * k * decay * np.sin(k * X) / (a + decay * np.cos(k * X))

    u = solve_burgers(exact(0.0), t, nu)
    # Tolerance: the solution is analytic (Fourier coefficients decay like 0.72^k), so the 2/3
    # truncation and the IF-RK4 time error at the default step together give ~6e-10; 1e-8
    # leaves a margin.
    np.testing.assert_allclose(u, exact(t), rtol=0, atol=1e-8)


def test_burgers_conserves_mean_and_dissipates_energy():
    rng = np.random.default_rng(0)
    u = gaussian_random_field(6, GRID, rng) + 0.3  # non-zero mean so conservation is visible
    mean0 = u.mean(axis=-1)
    energies = [np.mean(u**2, axis=-1)]
    for _ in range(10):  # t = 0.1, 0.2, ..., 1.0
        u = solve_burgers(u, 0.1, 0.1)
        energies.append(np.mean(u**2, axis=-1))
    np.testing.assert_allclose(u.mean(axis=-1), mean0, rtol=0, atol=1e-12)
    e = np.stack(energies)  # (11, 6)
    assert np.all(e[1:] <= e[:-1] * (1 + 1e-12))  # d/dt int u^2/2 = -nu int u_x^2 <= 0
    assert np.all(e[-1] < 0.9 * e[0])  # and it really dissipates


def test_burgers_time_stepping_converges_at_fourth_order():
    rng = np.random.default_rng(1)
    u0 = gaussian_random_field(4, GRID, rng) + 0.3
    ref = solve_burgers(u0, 1.0, 0.1, n_steps=2000)
    err = [np.abs(solve_burgers(u0, 1.0, 0.1, n_steps=n) - ref).max() for n in (60, 120)]
    # RK4: halving dt should divide the error by ~16; require at least 10.
    assert err[0] / err[1] > 10
    # The default (CFL-chosen) step is accurate to well below float32 storage precision.
    assert np.abs(solve_burgers(u0, 1.0, 0.1) - ref).max() < 1e-6


def test_fixed_seed_gives_identical_arrays_and_shapes():
    a = make_burgers(n_train=16, n_test=8, seed=3)
    b = make_burgers(n_train=16, n_test=8, seed=3)
    c = make_burgers(n_train=16, n_test=8, seed=4)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (16, 1, GRID) and a.y_test.shape == (8, 1, GRID)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.float32
    assert a.meta["equation"] == "burgers"
    assert set(a.as_dict()) == {"x_train", "y_train", "x_test", "y_test", "meta"}


def test_default_burgers_task_is_nonlinear_and_nontrivial():
    task = make_burgers()
    assert task.x_train.shape == (256, 1, GRID) and task.x_test.shape == (128, 1, GRID)
    # Copying the input is a poor answer: the solution has moved and steepened.
    assert rel_l2(task.x_test, task.y_test) > 0.5


def test_rel_l2():
    true = np.ones((2, 1, 4))
    pred = true.copy()
    pred[0] *= 1.5  # error 0.5 relative on sample 0, exact on sample 1
    assert rel_l2(pred, true) == pytest.approx(0.25)
    with pytest.raises(DataError):
        rel_l2(pred[:1], true)
    with pytest.raises(DataError):
        rel_l2(pred, np.zeros_like(true))


def test_bad_configuration_raises_one_clear_error():
    with pytest.raises(ConfigError):
        make_burgers(grid=127)
    with pytest.raises(ConfigError):
        solve_burgers(np.zeros(GRID), 1.0, viscosity=0.0)
    with pytest.raises(ConfigError):
        make_heat(n_train=0)


# ----------------------------------------------------------------------------- Darcy (2-D)


def _centres(n):
    x = (np.arange(n) + 0.5) / n
    return np.meshgrid(x, x, indexing="ij")


def test_darcy_converges_at_second_order_to_an_exact_solution():
    """a = 1, u = sin(pi x) sin(pi y), so forcing = 2 pi^2 u: the max error falls ~4x per halving of h."""
    errors = []
    for n in (16, 32, 64):
        x, y = _centres(n)
        exact = np.sin(np.pi * x) * np.sin(np.pi * y)
        errors.append(np.abs(solve_darcy(np.ones((n, n)), 2 * np.pi**2 * exact) - exact).max())
    assert errors[2] < 1e-3
    for coarse, fine in zip(errors, errors[1:]):
        assert 3.5 < coarse / fine < 4.5


def test_darcy_respects_the_maximum_principle_and_symmetry_of_a_layered_coefficient():
    """a jumps from 1 to 4 at x = 1/2 (constant in y): u > 0 inside (a positive source, a zero
    boundary), u is symmetric in y as the coefficient is, and it peaks in the softer half."""
    n = 32
    a = np.where(_centres(n)[0] < 0.5, 1.0, 4.0)
    u = solve_darcy(a)
    assert np.all(u > 0)  # maximum principle: a positive source and a zero boundary
    # symmetric in y (the coefficient is), and the peak lies in the softer half (x < 1/2)
    np.testing.assert_allclose(u, u[:, ::-1], rtol=1e-10, atol=1e-14)
    assert np.argmax(u[:, n // 2]) < n // 2


def test_make_darcy_is_seeded_two_valued_and_nonlinear():
    a = make_darcy(n_train=6, n_test=3, grid=16, seed=2)
    b = make_darcy(n_train=6, n_test=3, grid=16, seed=2)
    assert a.x_train.shape == a.y_train.shape == (6, 1, 16, 16) and a.x_test.shape == (3, 1, 16, 16)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert set(np.unique(a.x_train)) == {3.0, 12.0}
    np.testing.assert_allclose(a.y_train[:, 0], solve_darcy(a.x_train[:, 0]), rtol=1e-5)
    # the map is not linear: doubling the coefficient halves u, it does not double it
    np.testing.assert_allclose(solve_darcy(2 * a.x_train[0, 0]), a.y_train[0, 0] / 2, rtol=1e-5)


def test_bad_darcy_input_raises_one_clear_error():
    with pytest.raises(DataError, match="positive"):
        solve_darcy(np.zeros((8, 8)))
    with pytest.raises(ConfigError, match="n, n"):
        solve_darcy(np.ones((8, 6)))
    with pytest.raises(ConfigError, match="contrast"):
        make_darcy(contrast=(5.0, 1.0))
