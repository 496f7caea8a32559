"""Compute: named profiles (GPU type and count, MIG slice, spot, limits) and their k8s form."""
