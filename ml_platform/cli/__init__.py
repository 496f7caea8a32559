"""The ``ml-platform`` command: run, status, init, validate, demo and drift-alert.

The entry point is :func:`ml_platform.cli.main.main`; each command lives in its own module.
"""
