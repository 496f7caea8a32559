"""Evaluation of a model version.

Task metrics, per-slice metrics, the blocking evaluation gates, the report stored for each
evaluation, and the champion-versus-challenger promotion decision.
"""
