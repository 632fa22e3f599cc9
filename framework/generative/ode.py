"""ODE solvers and time grids shared by flow matching and probability-flow diffusion.

Each fixed-step solver is a short pure function ``solver(f, x, ts) -> x`` that integrates
``dx/dt = f(t, x)`` along the grid ``ts`` (increasing or decreasing; ``t`` is passed to ``f``
as a 0-dim tensor). They are registered as kind ``"ode_solver"``; :func:`odesolve` picks one
by name, builds the time grid and counts the function evaluations (NFE) of every call.

    from framework.generative.ode import odesolve
    result = odesolve(velocity, x0, solver="heun", steps=10)   # result.x, result.nfe

The fixed-step methods are the same as torchdiffeq's fixed-grid ones (``euler``,
``midpoint``, ``heun2``, ``rk4``: Kutta's 3/8 rule) so that results agree with it;
``dopri5`` is torchdiffeq's adaptive Dormand-Prince solver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from framework.errors import ConfigError
from registry import register

__all__ = [
    "ODEResult",
    "Velocity",
    "dopri5",
    "euler",
    "heun",
    "midpoint",
    "odesolve",
    "rk4",
    "time_grid",
    "ADAPTIVE_SOLVERS",
    "TIME_GRIDS",
]

Velocity = Callable[[Tensor, Tensor], Tensor]
"""``f(t, x) -> dx/dt``: ``t`` a 0-dim tensor, ``x`` and the result shaped alike."""

TIME_GRIDS = ("uniform", "edm")
ADAPTIVE_SOLVERS = ("dopri5",)


@dataclass
class ODEResult:
    """What a solve returns.

    Attributes:
        x: The state at the last time of the grid.
        nfe: Number of evaluations of the velocity field during the solve.
        ts: The time grid that was used (for dopri5: the two end points).
        trajectory: The states at every time of ``ts`` (first = initial state), if asked.
    """

    x: Tensor
    nfe: int
    ts: Tensor
    trajectory: Tensor | None = None


# -- fixed-step solvers ----------------------------------------------------------------------
@register("ode_solver", "euler")
def euler(f: Velocity, x: Tensor, ts: Tensor, trajectory: list[Tensor] | None = None) -> Tensor:
    """Explicit Euler, first order (one evaluation per step)."""
    for t0, t1 in zip(ts[:-1], ts[1:]):
        x = x + (t1 - t0) * f(t0, x)
        _record(trajectory, x)
    return x


@register("ode_solver", "midpoint")
def midpoint(f: Velocity, x: Tensor, ts: Tensor, trajectory: list[Tensor] | None = None) -> Tensor:
    """Explicit midpoint rule, second order (two evaluations per step)."""
    for t0, t1 in zip(ts[:-1], ts[1:]):
        dt = t1 - t0
        x_mid = x + 0.5 * dt * f(t0, x)
        x = x + dt * f(t0 + 0.5 * dt, x_mid)
        _record(trajectory, x)
    return x


@register("ode_solver", "heun")
def heun(f: Velocity, x: Tensor, ts: Tensor, trajectory: list[Tensor] | None = None) -> Tensor:
    """Heun's method (explicit trapezoidal rule), second order (two evaluations per step)."""
    for t0, t1 in zip(ts[:-1], ts[1:]):
        dt = t1 - t0
        d0 = f(t0, x)
        d1 = f(t1, x + dt * d0)
        x = x + 0.5 * dt * (d0 + d1)
        _record(trajectory, x)
    return x


@register("ode_solver", "rk4")
def rk4(f: Velocity, x: Tensor, ts: Tensor, trajectory: list[Tensor] | None = None) -> Tensor:
    """Fourth-order Runge-Kutta, Kutta's 3/8 rule as in torchdiffeq (four evaluations per step)."""
    for t0, t1 in zip(ts[:-1], ts[1:]):
        dt = t1 - t0
        k1 = f(t0, x)
        k2 = f(t0 + dt / 3, x + dt * k1 / 3)
        k3 = f(t0 + 2 * dt / 3, x + dt * (k2 - k1 / 3))
        k4 = f(t1, x + dt * (k1 - k2 + k3))
        x = x + dt * (k1 + 3 * (k2 + k3) + k4) / 8
        _record(trajectory, x)
    return x


@register("ode_solver", "dopri5")
def dopri5(
    f: Velocity,
    x: Tensor,
    ts: Tensor,
    trajectory: list[Tensor] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> Tensor:
    """Adaptive Dormand-Prince 5(4) (Dormand & Prince 1980) through torchdiffeq.odeint."""
    from torchdiffeq import odeint

    states = odeint(f, x, ts, rtol=rtol, atol=atol, method="dopri5")
    if trajectory is not None:
        trajectory.extend(states[1:])
    return states[-1]


def _record(trajectory: list[Tensor] | None, x: Tensor) -> None:
    if trajectory is not None:
        trajectory.append(x)


# -- time grids ------------------------------------------------------------------------------
def time_grid(
    kind: str = "uniform",
    steps: int = 10,
    t_start: float = 0.0,
    t_end: float = 1.0,
    rho: float = 7.0,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``steps + 1`` times from ``t_start`` to ``t_end`` (either order).

    ``uniform`` spaces them evenly. ``edm`` takes EDM's rho-spaced noise levels (Karras et
    al. 2022, eq. 5) from ``sigma_max`` at ``t_start`` to ``sigma_min`` at ``t_end``, maps
    each to the time of the straight path with the same noise-to-signal ratio,
    ``u = 1 / (1 + sigma)`` (x_u / u = x1 + sigma x0), and stretches ``u`` affinely onto the
    interval. The steps are short at both ends and longest in between: EDM's short steps at
    small sigma stay short, and its long steps at large sigma shrink by ``du = -dsigma /
    (1 + sigma)^2``. With the defaults, 10 steps on [0, 1]:

    >>> [round(float(d), 4) for d in time_grid("edm", 10).diff()]
    [0.0094, 0.018, 0.0359, 0.0725, 0.1403, 0.2276, 0.2534, 0.1654, 0.0629, 0.0147]
    """
    if steps < 1:
        raise ConfigError(f"an ODE solve needs steps >= 1, got {steps}")
    if kind == "uniform":
        return torch.linspace(t_start, t_end, steps + 1, dtype=dtype, device=device)
    if kind == "edm":
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"the edm grid needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        ramp = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        sigmas = (hi + ramp * (lo - hi)) ** rho
        u = 1 / (1 + sigmas)
        u = (u - u[0]) / (u[-1] - u[0])
        return (t_start + (t_end - t_start) * u).to(dtype=dtype, device=device)
    raise ConfigError(f"unknown time grid {kind!r}; choose one of {', '.join(TIME_GRIDS)}")


# -- the entry point -------------------------------------------------------------------------
def odesolve(
    f: Velocity,
    x: Tensor,
    solver: str = "euler",
    steps: int = 10,
    t_start: float = 0.0,
    t_end: float = 1.0,
    grid: str = "uniform",
    ts: Tensor | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    return_trajectory: bool = False,
) -> ODEResult:
    """Integrate ``dx/dt = f(t, x)`` from ``t_start`` to ``t_end`` and count the NFE.

    Args:
        f: The velocity field ``f(t, x)``; ``t`` is a 0-dim tensor of ``x``'s dtype.
        x: The initial state at ``t_start``.
        solver: A registered ``ode_solver`` name: ``euler``, ``midpoint``, ``heun``, ``rk4``
            (fixed steps) or ``dopri5`` (adaptive).
        steps: Number of steps of a fixed-step solver (ignored by ``dopri5``).
        t_start: Initial time.
        t_end: Final time (may be smaller than ``t_start``).
        grid: Time grid of a fixed-step solver: ``uniform`` or ``edm`` (see :func:`time_grid`).
        ts: An explicit time grid; overrides ``steps``, ``t_start``, ``t_end`` and ``grid``.
        rtol: Relative tolerance of ``dopri5``.
        atol: Absolute tolerance of ``dopri5``.
        return_trajectory: Also return the state at every time of the grid.

    Returns:
        An :class:`ODEResult` with the final state and the NFE.
    """
    import registry

    try:
        method = registry.get("ode_solver", solver)
    except registry.UnknownNameError as err:
        raise ConfigError(str(err)) from None
    adaptive = registry.entry("ode_solver", solver).name in ADAPTIVE_SOLVERS
    if ts is None:
        if adaptive:
            ts = torch.tensor([t_start, t_end], dtype=x.dtype, device=x.device)
        else:
            ts = time_grid(grid, steps, t_start, t_end, dtype=x.dtype, device=x.device)
    else:
        ts = torch.as_tensor(ts, dtype=x.dtype, device=x.device)
    if ts.ndim != 1 or len(ts) < 2:
        raise ConfigError(f"an ODE time grid needs at least two times, got shape {tuple(ts.shape)}")
    counter = _CountingField(f)
    states: list[Tensor] | None = [x] if return_trajectory else None
    kwargs = {"rtol": rtol, "atol": atol} if adaptive else {}
    out = method(counter, x, ts, trajectory=states, **kwargs)
    return ODEResult(out, counter.nfe, ts, torch.stack(states) if states is not None else None)


class _CountingField:
    """Wraps a velocity field and counts its evaluations."""

    def __init__(self, f: Velocity) -> None:
        self.f, self.nfe = f, 0

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        self.nfe += 1
        return self.f(t, x)

