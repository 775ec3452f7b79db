"""Triggers that start pipelines: file events near instruments, Globus transfers landing."""
