"""warehouse connections

Revision ID: 0005
Revises: 0004

Reserved in the linear chain so work on separate branches can fill it in without
renumbering; an empty upgrade is a valid no-op migration.
"""

from __future__ import annotations

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
