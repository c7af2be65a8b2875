"""training jobs, tuning and pipelines

Revision ID: 0006
Revises: 0005

Reserved in the linear chain so work on separate branches can fill it in without
renumbering; an empty upgrade is a valid no-op migration.
"""

from __future__ import annotations

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
