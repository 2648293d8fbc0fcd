"""``python -m backend.migrate``: migrate the database whose URL is read from stdin, then
exit; ``iac-backend serve`` runs it as a child so the server never loads Alembic. A failure
is one line on stderr and exit 2, as for ``iac-backend migrate``."""

from __future__ import annotations

from backend.cli import migrate_main

if __name__ == "__main__":
    migrate_main()
