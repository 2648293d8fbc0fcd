"""`iac`: the command-line client of the iac-runner backend's REST API.

It talks HTTP only (httpx) and imports nothing from ``backend``: no FastAPI or SQLAlchemy
on its import path, so it installs and starts light on any operator's machine or CI job.
"""
