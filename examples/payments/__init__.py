"""Deterministic synthetic payments-fraud data for the shipped fraud-detection example.

The data imitates a West/East African fintech's card and mobile-money payments: customers in five
regions of unequal size pay merchants in eight categories, with daily and weekly seasonality, a
month-end payday bump and a mild growth trend. Fraud (about 1-2% of payments) is drawn from a
latent logistic model of features that are only partly observable through the published tables,
so a good model ranks it well without reaching a perfect score. Fraud labels arrive late, as
chargebacks do, and the daily statistics tables are stamped at the end of their day so that a
point-in-time join cannot leak same-day information.

Everything is vectorized numpy; randomness comes from independent streams spawned from one
`numpy.random.SeedSequence`, and every draw has a size that does not depend on the drift settings.
That is what makes the output byte-identical for a seed and leaves the rows before `drift_start`
identical to a run without drift: drift only transforms, with pre-drawn randomness, rows at or
after `drift_start`, and every derived quantity looks only backwards in time.

Timestamps are microseconds since the Unix epoch internally and `datetime64[us, UTC]` on output.
Hours (seasonality, night, `hour_of_day`) are UTC hours; the modelled regions are UTC+0 to UTC+3.

Modules: `generator` (the entry points `generate` and `generate_frames`), `config` (tables,
vocabularies, model constants, validated settings), `entities` (customers and merchants),
`transactions` (the payments and their fraud labels), `drift`, `windows` (time-window counting)
and `aggregates` (the daily statistics tables).
"""
