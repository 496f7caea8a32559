"""ml_platform: a self-service ML platform as a Dagster code location.

One package per concept; ``docs/architecture.md`` has the module map. Importing this package (or
any of its packages) imports nothing heavy.
"""
