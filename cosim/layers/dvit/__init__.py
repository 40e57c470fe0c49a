"""DViT distributed inference (Xie et al., IEEE TVT 2024): cost model, schedulers, live layer."""

from cosim.layers.dvit.costmodel import PRESETS, DViTParams, DViTShape, mm1_wait_s
from cosim.layers.dvit.problem import Evaluation, Problem, evaluate

__all__ = ["PRESETS", "DViTParams", "DViTShape", "mm1_wait_s", "Evaluation", "Problem", "evaluate"]
