"""One router per resource; each validates, calls a ``backend.store`` function, and returns."""
