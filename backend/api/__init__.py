"""The HTTP transport: routers, dependencies and the mapping of domain errors to status codes."""
