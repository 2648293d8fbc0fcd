"""The web UI: HTML pages (``pages.py``), their Jinja2 templates and static JS/CSS.

The pages carry no data: their JavaScript reads everything from the authenticated REST API
(``/api/v1``) with the token the user pasted on ``/login``, kept in ``sessionStorage``.
"""
