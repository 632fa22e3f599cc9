"""Class-conditional generators: the shared base, guidance, ODE solvers and three families.

Importing this package registers every family's entries (``diffusion``, ``flow``, ``gan``).
"""

from framework.generative import fkc, guidance, guidance_clean, ode, search, verifiers  # noqa: F401
from framework.generative import diffusion, flow, gan  # noqa: F401
from framework.generative import generative_classifier  # noqa: F401
