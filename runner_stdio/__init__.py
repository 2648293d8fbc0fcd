"""The `iac-runner` executable: one JSON request on stdin, one JSON response on stdout.

Kept free of heavy imports (no grpc, no pydantic): it starts once per command.
"""
