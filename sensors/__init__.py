"""Schedules and sensors built from the specs: retraining cadence, new data, automation, alerts."""
