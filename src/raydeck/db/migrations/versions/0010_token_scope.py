"""token scope: a job token acts for its submitter, in one project, with job permissions only

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scope_project", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("scope_permissions", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("scope_permissions")
        batch_op.drop_column("scope_project")
