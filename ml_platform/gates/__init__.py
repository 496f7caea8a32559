"""Data gates: Great Expectations 1.x suites that keep bad data from training a model.

A gate is a list of expectations (``spec``), completed with defaults from the model's schema
(``expectations``), checked against a DataFrame by ``run.run_gate``: vectorized evaluators
(``fast``) decide what they can and Great Expectations (``great_expectations``) decides and
explains the rest. The verdict is a ``report.GateReport``; ``state`` remembers each feature view's
latest verdict. Importing any module here imports neither Great Expectations nor pandas.
"""
