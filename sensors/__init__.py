"""Schedules and sensors from the specs: cadences, new data, drift, automation, alerts."""
