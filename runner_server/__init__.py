"""The gRPC runner server: wraps `iac-runner --stream` and streams every line to its callers."""

__version__ = "0.1.0"
