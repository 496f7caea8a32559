"""Core: settings, storage (one atomic writer), the audit log, alerts and small shared helpers.

Everything else in the platform builds on these modules; they import nothing from the rest of
``ml_platform`` and only the standard library at module level (SQLAlchemy for the audit log).
"""
