"""Training and scoring sets: label rows joined point-in-time with Feast features.

A training set is written as three parquet files (train/validation/test, split by time) plus a
manifest, in a directory named after its data snapshot id: a content hash of the joined rows, so
the same data always gets the same id and a model version can name exactly what it learned from.
``training_set`` builds and reads them, ``scoring_set`` builds the rows to score, ``split`` holds
the time split and the snapshot id.
"""
