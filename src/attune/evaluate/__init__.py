"""Evaluation: tasks, metrics, the runner, the forgetting probe, compare and the report."""

from attune.evaluate.runner import TaskResult, run_task
from attune.evaluate.tasks import Task, TaskSpec, load_task

__all__ = ["Task", "TaskResult", "TaskSpec", "load_task", "run_task"]
