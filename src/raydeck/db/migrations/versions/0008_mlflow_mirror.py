"""mirroring of custom jobs and trials to an MLflow tracking server

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlflow_runs",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("experiment_id", sa.String(length=64), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("params_logged", sa.Boolean(), nullable=False),
        sa.Column("last_metric_id", sa.Integer(), nullable=False),
        sa.Column("mirrored_state", sa.String(length=16), nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("mlflow_runs", schema=None) as batch_op:
        batch_op.create_index("ix_mlflow_runs_closed", ["closed"], unique=False)


def downgrade() -> None:
    op.drop_table("mlflow_runs")
