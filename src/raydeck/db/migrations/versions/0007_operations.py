"""operations: logs, cost, audit and roles

Revision ID: 0007
Revises: 0006

Reserved in the linear chain so work on separate branches can fill it in without
renumbering; an empty upgrade is a valid no-op migration.
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
