"""Domain and persistence functions, one module per resource.

Each function takes an ``AsyncSession`` and works inside the caller's transaction: it may
flush, but never commits, so a route (or the dispatcher) can combine several calls into one
unit of work. Failures are ``backend.errors`` exceptions with a message meant for the user.
"""
