"""Pydantic v2 request and response bodies of the REST API, one module per resource (as
the routes are).

Requests check shape and types; the domain functions check the rules (names, labels,
archive contents) so the same rules hold for every caller, not only the API.
"""
