"""The model registry: every MLflow call the platform makes, behind one client per backend.

``client`` holds ``ModelRegistry`` (runs, metrics, model versions, tags, the ``champion`` alias,
loading a version without pickle), ``tags`` the names of the tags and alias it writes, ``pyfunc``
the model code MLflow stores with each version, and ``code_version`` the code version a run
records.
"""
