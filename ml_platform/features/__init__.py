"""Feast integration: compile feature-repo specs to Feast objects, apply, materialize, retrieve.

Feast is imported inside the functions: loading the code location must not pay for it.
``store`` builds the Feast objects and the store, ``materialize`` gates a view's source data and
loads it online, ``retrieval`` joins rows point-in-time, ``generation`` runs a repo's generator.
"""
