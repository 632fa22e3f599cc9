"""ODE solvers: equal to torchdiffeq's fixed-grid methods, NFE counted, grids well formed."""

import math

import pytest
import torch
from torchdiffeq import odeint

from framework.errors import ConfigError
from framework.generative.ode import odesolve, time_grid


def _field(t, x):
    # Non-linear and time-dependent, so every solver gives a different answer.
    return torch.sin(3 * t) * x - 0.5 * x**3 + torch.cos(x.flip(-1))


TORCHDIFFEQ_NAMES = {"euler": "euler", "midpoint": "midpoint", "heun": "heun2", "rk4": "rk4"}
NFE_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


@pytest.mark.parametrize("solver", sorted(TORCHDIFFEQ_NAMES))
@pytest.mark.parametrize("grid", ["uniform", "edm"])
def test_fixed_step_solvers_equal_torchdiffeq(solver, grid):
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = time_grid(grid, 7, dtype=torch.float64)
    ours = odesolve(_field, x0, solver=solver, ts=ts, return_trajectory=True)
    theirs = odeint(_field, x0, ts, method=TORCHDIFFEQ_NAMES[solver])
    torch.testing.assert_close(ours.trajectory, theirs, rtol=1e-12, atol=1e-12)
    assert ours.nfe == 7 * NFE_PER_STEP[solver]


def test_decreasing_time_and_solver_order():
    # dx/dt = x from t=1 back to t=0: x(0) = x(1) / e. Higher order, smaller error.
    x1 = torch.ones(1, dtype=torch.float64)
    errors = {
        s: abs(odesolve(lambda t, x: x, x1, solver=s, steps=8, t_start=1.0, t_end=0.0).x.item() - math.exp(-1))
        for s in NFE_PER_STEP
    }
    assert errors["rk4"] < errors["heun"] < errors["euler"]
    assert errors["rk4"] < 1e-5


def test_dopri5_reaches_tolerance_and_counts_nfe():
    x0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    result = odesolve(lambda t, x: -2 * t * x, x0, solver="dopri5", rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(result.x, x0 * math.exp(-1.0), rtol=1e-6, atol=1e-6)
    # dopri5 spends 6 evaluations per accepted step plus the initial step-size selection.
    assert result.nfe >= 8 and result.nfe % 6 == 2
    assert result.ts.tolist() == [0.0, 1.0]


def test_time_grids():
    uniform = time_grid("uniform", 4)
    torch.testing.assert_close(uniform, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    edm = time_grid("edm", 10, t_start=0.0, t_end=1.0, dtype=torch.float64)
    assert edm[0] == 0 and edm[-1] == 1 and (edm.diff() > 0).all()
    # Mapped to flow time, EDM's noise levels crowd the steps at both ends (pure noise and
    # clean data) and stretch them in the middle.
    steps = edm.diff()
    assert steps[0] < 0.1 and steps[-1] < 0.1 and steps.max() > 0.2
    reversed_edm = time_grid("edm", 10, t_start=1.0, t_end=0.0, dtype=torch.float64)
    assert reversed_edm[0] == 1 and reversed_edm[-1] == 0 and (reversed_edm.diff() < 0).all()


def test_bad_input_raises_config_error():
    x = torch.zeros(2)
    with pytest.raises(ConfigError, match="ode_solver"):
        odesolve(lambda t, x: x, x, solver="rk45")
    with pytest.raises(ConfigError, match="time grid"):
        odesolve(lambda t, x: x, x, grid="cosine")
    with pytest.raises(ConfigError, match="steps"):
        odesolve(lambda t, x: x, x, steps=0)
