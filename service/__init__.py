"""The funcx-flows service: REST API, storage, auth and the endpoint dispatcher."""
