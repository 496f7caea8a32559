"""The model lifecycle steps the assets run: train, evaluate, promote, score, monitor.

Each step reads the current good output of the step before it (a pointer written only on
success) and writes its own output before moving its pointer, so a failed step leaves the previous
model, evaluation, predictions and drift report intact. A version's drift reference is computed
when it is trained (``reference``) and read when its scored windows are monitored (``monitor``).
No Dagster here: the steps take the engines they use (settings, a ``ModelRegistry``, an
``AuditLog``) as parameters, so tests call them directly with real local engines or fakes.
"""
