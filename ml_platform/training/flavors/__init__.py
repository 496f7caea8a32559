"""Model flavors: the kinds of model the platform trains (PyTorch networks, XGBoost trees).

A flavor fits a model on the training set, saves it without pickle and loads it back; every fitted
model predicts on raw DataFrames and encodes the truth the same way, so evaluation, gates,
promotion and scoring treat all flavors alike. `base` holds the protocols, `params` the parameter
schemas the spec validates with (no heavy imports), `registry` finds a flavor by name or by a
saved model's `model.json`.
"""
