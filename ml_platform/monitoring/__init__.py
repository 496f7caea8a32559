"""Drift monitoring: the training reference of a model version and fast verdicts against it.

``reference`` computes, once at training time, what a drift check needs to know about the
training inputs and the model's predictions (exact value counts or a quantile sketch per numeric
column, category counts, missing shares) as JSON. ``drift`` compares a scored window with it in
one vectorized pass, with the tests and thresholds Evidently's ``DataDriftPreset`` chooses by
default (``statistical_tests`` holds them), so the verdicts agree with Evidently's without its
cost. ``evidently_report`` renders Evidently's own HTML report on bounded samples, and
``performance`` compares the primary metric on labelled rows with the evaluation's.
"""
