"""Generated dense PDE tasks: map an initial condition u0(x) to the solution u(x, T).

These give transmodal a dense (one value per grid point) target that needs no download and
whose ground truth is known to solver precision, so a model's error is the model's alone.

Both equations live on the periodic interval [0, 2*pi) sampled at ``grid`` equispaced points
x_j = 2*pi*j/grid, so Fourier wavenumbers are the integers k = 0, 1, ..., grid/2.

Initial conditions (shared by both tasks) are draws of a zero-mean Gaussian random field whose
Fourier coefficients are independent complex normals with standard deviation

    s_k = (k^2 + tau^2)^(-alpha/2),   1 <= k <= grid // 3,   s_0 = 0,

(the Matern-like spectrum used by the FNO Burgers benchmark, written for a 2*pi period), each
field then scaled so that its *expected* root-mean-square value is ``amplitude``. Modes above
grid // 3 are left empty so the initial condition is exactly representable after the 2/3
dealiasing rule below. One ``numpy.random.default_rng(seed)`` stream draws train then test
fields, so a fixed seed gives identical arrays.

Heat, u_t = nu u_xx: solved exactly, each Fourier mode multiplied by exp(-nu k^2 t).

Viscous Burgers, u_t + u u_x = nu u_xx, written u_t = -(u^2/2)_x + nu u_xx:
pseudo-spectral in space (real FFT; the quadratic term is formed from modes |k| < grid/3 and
its result truncated to the same band: Orszag's 2/3 rule, so no aliasing error enters) and
the classical integrating-factor RK4 in time (Kassam & Trefethen 2005, "IF-RK4"): the stiff
diffusion is integrated exactly by the factor exp(-nu k^2 t) and RK4 handles only the
advection. RK4's stability interval on the imaginary axis is |lambda dt| <= 2*sqrt(2); the
advection eigenvalues are bounded by max|u| * k_max with k_max = grid/3, and viscous Burgers
obeys a maximum principle (max|u| never grows), so the step

    dt = min(dt_max, cfl / (max|u0| * k_max)),  cfl = 0.5 by default,

chosen once from u0 stays stable for the whole run (then shortened so it divides T exactly).

Darcy flow (a 2-D field, the FNO paper's second benchmark), -div(a grad u) = 1 on the unit
square with u = 0 on its boundary: the map is coefficient a(x, y) -> pressure u(x, y). The
coefficient takes two values (3 and 12) where a 2-D Gaussian random field (the spectrum above,
with |k| the length of the integer wave vector) is negative or not: blobs with sharp interfaces.
Finite volumes on the n x n cell centres: a face between two cells carries the flux
a_f (u_1 - u_2) / h with a_f the harmonic mean of the two coefficients (the exact flux of a
coefficient that jumps at the face); a boundary face sees u = 0 at half a cell; one sparse
direct solve per sample (scipy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transmodal.errors import ConfigError, DataError

__all__ = [
    "DenseTask",
    "gaussian_random_field",
    "solve_heat",
    "solve_burgers",
    "make_heat",
    "make_burgers",
    "gaussian_random_field_2d",
    "solve_darcy",
    "make_darcy",
]


@dataclass(frozen=True, eq=False)
class DenseTask:
    """A dense regression task: inputs and targets share the grid, shapes (N, 1, *grid) float32."""

    x_train: np.ndarray  # (N_train, 1, L) initial condition u0 (Darcy: (N_train, 1, n, n) a)
    y_train: np.ndarray  # (N_train, 1, L) solution at t_final (Darcy: (N_train, 1, n, n) u)
    x_test: np.ndarray  # (N_test, 1, L)
    y_test: np.ndarray  # (N_test, 1, L)
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The arrays and metadata as a plain dict (for callers that expect one)."""
        return {
            "x_train": self.x_train,
            "y_train": self.y_train,
            "x_test": self.x_test,
            "y_test": self.y_test,
            "meta": dict(self.meta),
        }


def _check_grid(grid: int) -> None:
    if not isinstance(grid, (int, np.integer)) or grid < 8 or grid % 2:
        raise ConfigError(f"grid must be an even integer >= 8, got {grid!r}")


def _check_fields(n: int, grid: int) -> None:
    _check_grid(grid)
    if n < 1:
        raise ConfigError(f"number of fields must be >= 1, got {n}")


def _wavenumbers(grid: int) -> np.ndarray:
    """Non-negative integer wavenumbers of a real FFT of length ``grid`` on [0, 2*pi)."""
    return np.arange(grid // 2 + 1, dtype=np.float64)  # (L/2+1,)


def gaussian_random_field(
    n: int,
    grid: int,
    rng: np.random.Generator,
    alpha: float = 2.0,
    tau: float = 3.0,
    amplitude: float = 1.0,
) -> np.ndarray:
    """Draw ``n`` zero-mean periodic fields with the spectrum in the module docstring.

    Returns float64 (n, grid). The expected RMS of each field is ``amplitude``.
    """
    _check_fields(n, grid)
    k = _wavenumbers(grid)
    kmax = grid // 3
    std = np.zeros_like(k)
    std[1 : kmax + 1] = (k[1 : kmax + 1] ** 2 + tau**2) ** (-alpha / 2.0)
    # E[mean_x u^2] = 2 * sum_k s_k^2 * E|z|^2 with E|z|^2 = 1 (Parseval for a real field).
    std *= amplitude / math.sqrt(2.0 * float(np.sum(std**2)))
    z = rng.standard_normal((n, k.size)) + 1j * rng.standard_normal((n, k.size))
    z /= math.sqrt(2.0)  # complex normal with E|z|^2 = 1
    coeff = z * std  # (n, L/2+1) Fourier coefficients of u / grid
    return np.fft.irfft(coeff * grid, n=grid, axis=-1)  # (n, L)


def solve_heat(u0: np.ndarray, t: float, viscosity: float) -> np.ndarray:
    """Exact solution of u_t = nu u_xx on [0, 2*pi) periodic at time ``t``.

    u0: (..., L) samples on the grid; returns the same shape, float64.
    """
    u0 = np.asarray(u0, dtype=np.float64)
    grid = u0.shape[-1]
    _check_grid(grid)
    if t < 0 or viscosity < 0:
        raise ConfigError(f"t and viscosity must be >= 0, got t={t}, viscosity={viscosity}")
    k = _wavenumbers(grid)
    u_hat = np.fft.rfft(u0, axis=-1) * np.exp(-viscosity * k**2 * t)
    return np.fft.irfft(u_hat, n=grid, axis=-1)


def _burgers_step_count(u0: np.ndarray, t_final: float, cfl: float, dt_max: float) -> int:
    """Steps for IF-RK4 so that dt * max|u| * k_max <= cfl (see module docstring)."""
    grid = u0.shape[-1]
    umax = float(np.max(np.abs(u0))) if u0.size else 0.0
    dt = dt_max if umax == 0.0 else min(dt_max, cfl / (umax * (grid / 3.0)))
    return max(1, math.ceil(t_final / dt))


def solve_burgers(
    u0: np.ndarray,
    t_final: float,
    viscosity: float,
    n_steps: int | None = None,
    cfl: float = 0.5,
    dt_max: float = 0.01,
) -> np.ndarray:
    """Viscous Burgers on [0, 2*pi) periodic by dealiased pseudo-spectral IF-RK4.

    u0: (..., L) initial samples (a batch is solved at once). ``n_steps`` fixes the number
    of equal steps (used by the convergence test); by default it follows from the CFL rule in
    the module docstring. Returns u(x, t_final) with the shape of u0, float64.
    """
    u0 = np.asarray(u0, dtype=np.float64)
    grid = u0.shape[-1]
    _check_grid(grid)
    if viscosity <= 0:
        raise ConfigError(f"viscosity must be > 0 for viscous Burgers, got {viscosity}")
    if t_final < 0:
        raise ConfigError(f"t_final must be >= 0, got {t_final}")
    if not np.all(np.isfinite(u0)):
        raise DataError("initial condition contains NaN or inf")
    if t_final == 0:
        return u0.copy()
    if n_steps is None:
        n_steps = _burgers_step_count(u0, t_final, cfl, dt_max)
    if n_steps < 1:
        raise ConfigError(f"n_steps must be >= 1, got {n_steps}")
    dt = t_final / n_steps

    k = _wavenumbers(grid)
    keep = k < grid / 3.0  # 2/3 rule: modes kept when forming the quadratic term
    ik_half = -0.5j * k * keep  # d/dx of -(u^2)/2, truncated to the kept band
    e_full = np.exp(-viscosity * k**2 * dt)  # integrating factor over one step
    e_half = np.exp(-viscosity * k**2 * dt / 2.0)

    def nonlinear(v_hat: np.ndarray) -> np.ndarray:
        u = np.fft.irfft(v_hat * keep, n=grid, axis=-1)  # (..., L) dealiased field
        return ik_half * np.fft.rfft(u * u, axis=-1)  # (..., L/2+1)

    v = np.fft.rfft(u0, axis=-1)  # (..., L/2+1)
    for _ in range(n_steps):
        a = dt * nonlinear(v)
        b = dt * nonlinear(e_half * (v + a / 2.0))
        c = dt * nonlinear(e_half * v + b / 2.0)
        d = dt * nonlinear(e_full * v + e_half * c)
        v = e_full * v + (e_full * a + 2.0 * e_half * (b + c) + d) / 6.0
    u = np.fft.irfft(v, n=grid, axis=-1)
    if not np.all(np.isfinite(u)):
        # Cannot happen under the CFL rule; a caller-chosen n_steps can violate it.
        raise ConfigError(
            f"Burgers solve diverged with {n_steps} steps; use more steps (or the default)"
        )
    return u


def gaussian_random_field_2d(
    n: int,
    grid: int,
    rng: np.random.Generator,
    alpha: float = 2.0,
    tau: float = 3.0,
) -> np.ndarray:
    """Draw ``n`` zero-mean periodic 2-D fields, float64 (n, grid, grid): independent complex
    normal Fourier coefficients with standard deviation (|k|^2 + tau^2)^(-alpha/2) for
    0 < |k| <= grid // 3 (k the integer wave vector), zero elsewhere. Unit-free: Darcy only
    thresholds it."""
    _check_fields(n, grid)
    kx = np.fft.fftfreq(grid, 1.0 / grid)[:, None]  # (grid, 1) integer wavenumbers
    ky = _wavenumbers(grid)[None, :]  # (1, grid/2+1)
    k2 = kx**2 + ky**2
    std = np.where((k2 > 0) & (k2 <= (grid // 3) ** 2), (k2 + tau**2) ** (-alpha / 2.0), 0.0)
    z = rng.standard_normal((n, *std.shape)) + 1j * rng.standard_normal((n, *std.shape))
    return np.fft.irfft2(z * std, s=(grid, grid), axes=(-2, -1))  # (n, grid, grid)


def solve_darcy(a: np.ndarray, forcing: float | np.ndarray = 1.0) -> np.ndarray:
    """-div(a grad u) = forcing on the unit square, u = 0 on the boundary (module docstring).

    a: (..., n, n) positive coefficient at the cell centres ((i + 1/2) h, (j + 1/2) h), h = 1/n;
    forcing: a number or an (n, n) array at the same centres. Returns u, float64, shaped like a.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2] or a.shape[-1] < 2:
        raise ConfigError(f"the Darcy coefficient must be (..., n, n) with n >= 2, got {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise DataError("the Darcy coefficient must be finite and positive")
    n = a.shape[-1]
    h2 = 1.0 / n**2
    f = np.broadcast_to(np.asarray(forcing, dtype=np.float64), (n, n)).ravel() * h2
    # the matrix pattern is the same for every sample: each interior face (p, q) adds its
    # coefficient at (p, p), (q, q) and its negative at (p, q), (q, p); each cell's diagonal
    # also gets 2 a_cell per boundary face (u = 0 half a cell away: flux a_cell * u / (h / 2))
    idx = np.arange(n * n).reshape(n, n)
    faces = [(idx[:, :-1].ravel(), idx[:, 1:].ravel()), (idx[:-1].ravel(), idx[1:].ravel())]
    boundary = np.zeros((n, n))
    boundary[0] += 1
    boundary[-1] += 1
    boundary[:, 0] += 1
    boundary[:, -1] += 1
    rows = np.concatenate([r for p, q in faces for r in (p, q, p, q)] + [idx.ravel()])
    cols = np.concatenate([c for p, q in faces for c in (p, q, q, p)] + [idx.ravel()])
    flat = a.reshape(-1, n, n)
    u = np.empty_like(flat)
    for s, c in enumerate(flat):
        vals = []
        for p, q in faces:
            cp, cq = c.ravel()[p], c.ravel()[q]
            af = 2.0 * cp * cq / (cp + cq)  # harmonic mean at the face
            vals += [af, af, -af, -af]
        vals.append((2.0 * c * boundary).ravel())
        matrix = coo_matrix((np.concatenate(vals), (rows, cols)),
                            shape=(n * n, n * n)).tocsc()  # duplicates are summed
        u[s] = spsolve(matrix, f).reshape(n, n)
    return u.reshape(a.shape)


def make_darcy(
    n_train: int = 256,
    n_test: int = 128,
    grid: int = 32,
    seed: int = 0,
    alpha: float = 2.0,
    tau: float = 3.0,
    contrast: tuple[float, float] = (3.0, 12.0),
) -> DenseTask:
    """Darcy flow a -> u on an n x n grid (a 2-D dense task; module docstring): the coefficient
    is ``contrast[1]`` where a Gaussian random field is >= 0 and ``contrast[0]`` elsewhere."""
    _check_sizes(n_train, n_test)
    low, high = (float(v) for v in contrast)
    if not 0 < low < high:
        raise ConfigError(f"contrast must be two values 0 < low < high, got {contrast}")
    rng = np.random.default_rng(seed)
    field_ = gaussian_random_field_2d(n_train + n_test, grid, rng, alpha, tau)
    a = np.where(field_ >= 0, high, low)  # (N, n, n)
    u = solve_darcy(a)
    meta = dict(equation="darcy", grid=grid, seed=seed, alpha=alpha, tau=tau,
                contrast=[low, high], domain="unit square, u = 0 on the boundary, forcing 1",
                solver="cell-centred finite volumes, harmonic-mean faces, sparse direct solve")
    return _split(a, u, n_train, meta)


def _split(
    fields: np.ndarray, solved: np.ndarray, n_train: int, meta: dict[str, Any]
) -> DenseTask:
    x = fields[:, None].astype(np.float32)  # (N, 1, *grid)
    y = solved[:, None].astype(np.float32)  # (N, 1, *grid)
    return DenseTask(x[:n_train], y[:n_train], x[n_train:], y[n_train:], meta)


def _check_sizes(n_train: int, n_test: int) -> None:
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")


def make_heat(
    n_train: int = 256,
    n_test: int = 128,
    grid: int = 128,
    t_final: float = 0.5,
    viscosity: float = 0.1,
    seed: int = 0,
    alpha: float = 2.0,
    tau: float = 3.0,
    amplitude: float = 1.0,
) -> DenseTask:
    """Heat-equation task u0 -> u(T): linear, so ridge solves it (rel_l2 ~1e-6); a sanity task."""
    _check_sizes(n_train, n_test)
    rng = np.random.default_rng(seed)
    u0 = gaussian_random_field(n_train + n_test, grid, rng, alpha, tau, amplitude)
    u_t = solve_heat(u0, t_final, viscosity)
    meta = dict(
        equation="heat", grid=grid, t_final=t_final, viscosity=viscosity, seed=seed,
        alpha=alpha, tau=tau, amplitude=amplitude, domain="[0, 2pi) periodic",
    )
    return _split(u0, u_t, n_train, meta)


def make_burgers(
    n_train: int = 256,
    n_test: int = 128,
    grid: int = 128,
    t_final: float = 1.0,
    viscosity: float = 0.1,
    seed: int = 0,
    alpha: float = 2.0,
    tau: float = 3.0,
    amplitude: float = 1.0,
) -> DenseTask:
    """Viscous Burgers task u0 -> u(T) (nonlinear: steepening fronts that diffuse).

    Defaults (T = 1, nu = 0.1, unit-RMS fields on 128 points) give fronts that steepen to a few
    grid cells wide yet stay resolved, so the map is clearly nonlinear but learnable.
    """
    _check_sizes(n_train, n_test)
    rng = np.random.default_rng(seed)
    u0 = gaussian_random_field(n_train + n_test, grid, rng, alpha, tau, amplitude)
    u_t = solve_burgers(u0, t_final, viscosity)
    meta = dict(
        equation="burgers", grid=grid, t_final=t_final, viscosity=viscosity, seed=seed,
        alpha=alpha, tau=tau, amplitude=amplitude, domain="[0, 2pi) periodic",
        solver="pseudo-spectral, 2/3 dealiasing, integrating-factor RK4",
    )
    return _split(u0, u_t, n_train, meta)
