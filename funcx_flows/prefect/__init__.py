"""Prefect integration: remote tasks, the endpoint task runner, batched maps, Globus transfers."""
