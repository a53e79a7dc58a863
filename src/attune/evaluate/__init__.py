"""Evaluation: tasks, metrics, the runner, the forgetting probe, compare and the report.

Import the module you need (`attune.evaluate.runner`, `.compare`, ...): this package imports
nothing itself, so reading a result or rendering a table never loads torch.
"""
