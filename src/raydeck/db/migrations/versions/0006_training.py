"""training jobs, tuning and pipelines

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _times() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("cluster_id", sa.String(length=40), nullable=True),
        sa.Column("cluster_name", sa.String(length=64), nullable=True),
        sa.Column("ephemeral_cluster", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("submission_id", sa.String(length=128), nullable=True),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("best_trial_id", sa.String(length=40), nullable=True),
        sa.Column("pipeline_id", sa.String(length=40), nullable=True),
        *_times(),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        for column in ("cluster_id", "pipeline_id", "state"):
            batch_op.create_index(f"ix_training_jobs_{column}", [column], unique=False)
        batch_op.create_index("ix_training_jobs_kind_id", ["kind", "id"], unique=False)

    op.create_table(
        "training_trials",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tuning_job_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("sampler_attrs", sa.JSON(), nullable=False),
        sa.Column("final_value", sa.Float(), nullable=True),
        sa.Column("final_step", sa.Integer(), nullable=True),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tuning_job_id"], ["training_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tuning_job_id", "number", name="uq_trials_job_number"),
    )
    with op.batch_alter_table("training_trials", schema=None) as batch_op:
        batch_op.create_index("ix_training_trials_state", ["state"], unique=False)
        batch_op.create_index("ix_training_trials_tuning_job_id", ["tuning_job_id"], unique=False)

    op.create_table(
        "training_metrics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("training_metrics", schema=None) as batch_op:
        batch_op.create_index(
            "ix_training_metrics_run_metric", ["run_id", "metric", "id"], unique=False
        )

    op.create_table(
        "training_pipelines",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("training_job_id", sa.String(length=40), nullable=True),
        sa.Column("model_version_id", sa.String(length=40), nullable=True),
        sa.Column("model_version", sa.String(length=200), nullable=True),
        *_times(),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("training_pipelines", schema=None) as batch_op:
        batch_op.create_index("ix_training_pipelines_state", ["state"], unique=False)


def downgrade() -> None:
    op.drop_table("training_pipelines")
    op.drop_table("training_metrics")
    op.drop_table("training_trials")
    op.drop_table("training_jobs")
