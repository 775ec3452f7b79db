"""The funcx-flows endpoint: agent, interchange, managers, workers, providers, CLI."""
