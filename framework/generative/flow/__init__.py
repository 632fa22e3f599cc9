"""Flow matching: probability paths (kind ``path``), the ``flow`` LightningModule and reflow.

Importing this package registers the paths, the ODE solvers (kind ``ode_solver``, shared
with diffusion in :mod:`framework.generative.ode`), the ``flow`` model and the
``reflow_pairs`` DataModule.
"""

from framework.generative import ode  # noqa: F401  (registers the ODE solvers)
from framework.generative.flow import model, paths, reflow  # noqa: F401
from framework.generative.flow.model import FlowMatching
from framework.generative.flow.paths import ProbabilityPath, build_path, sample_times
from framework.generative.flow.reflow import ReflowPairs

__all__ = ["FlowMatching", "ProbabilityPath", "ReflowPairs", "build_path", "sample_times"]
