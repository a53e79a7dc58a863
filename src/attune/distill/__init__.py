"""Distillation helpers: cached teacher generations and a truncated student.

The `distill` objective (`attune.train.objectives.distill`) trains on what lives here.
"""

from attune.distill.cache import cache_key, teacher_responses
from attune.distill.student import random_student, truncate_layers

__all__ = ["cache_key", "random_student", "teacher_responses", "truncate_layers"]
