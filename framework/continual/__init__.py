"""Class-incremental and few-shot class-incremental learning: scenarios, metrics and methods.

Importing this package registers the scenarios (kind ``data``: ``class_incremental``,
``few_shot_incremental``) and the methods (kind ``model``: ``finetune``, ``joint``, ``ncm``,
``fetril``, ``wa``, ``teen``, ``icarl``, ``acil`` / ``gacil``, ``generative_replay``).
"""

from framework.continual.acil import ACIL
from framework.continual.base import ContinualModule
from framework.continual.baselines import NCM, Finetune, Joint
from framework.continual.fetril import FeTrIL
from framework.continual.generative_replay import GenerativeReplay
from framework.continual.icarl import ICaRL
from framework.continual.scenario import (
    ClassIncremental,
    FewShotIncremental,
    IncrementalScenario,
)
from framework.continual.teen import TEEN
from framework.continual.wa import WA

__all__ = [
    "ACIL",
    "NCM",
    "TEEN",
    "WA",
    "ClassIncremental",
    "ContinualModule",
    "FeTrIL",
    "FewShotIncremental",
    "GenerativeReplay",
    "ICaRL",
    "Finetune",
    "IncrementalScenario",
    "Joint",
]
