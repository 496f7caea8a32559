"""Worked examples built on the platform: the code a team writes next to its specs.

They live outside ``ml_platform`` and ``assets`` because they are neither platform nor wiring; a
spec names them by import path (``generator.function`` in a feature repo).
"""
