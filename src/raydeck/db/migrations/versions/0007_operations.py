"""operations: logs, cost, audit and roles

Revision ID: 0007
Revises: 0006

Projects, accounts (users / service accounts), role bindings, custom roles, the audit log,
collected logs, cost meters and records, budgets. Every existing token becomes a service
account of the same name bound to the token's role in every project, so it keeps working.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _id(prefix: str) -> str:
    return f"{prefix}-{time.time_ns() // 1000:014x}{secrets.token_hex(4)}"


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "role_bindings",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("account_id", "project", "role", name="uq_role_bindings_binding"),
    )
    op.create_index("ix_role_bindings_account_id", "role_bindings", ["account_id"])
    op.create_index("ix_role_bindings_project", "role_bindings", ["project"])
    op.create_table(
        "custom_roles",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("time", _TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("token_id", sa.String(40), nullable=True),
        sa.Column("project", sa.String(64), nullable=True),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_audit_log_time", "audit_log", ["time"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])
    op.create_table(
        "log_records",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("resource_kind", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("resource_name", sa.String(128), nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("time", _TS, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_log_records_resource", "log_records", ["resource_kind", "resource_id", "id"]
    )
    op.create_index("ix_log_records_resource_name", "log_records", ["resource_name"])
    op.create_index("ix_log_records_time", "log_records", ["time"])
    op.create_table(
        "log_cursors",
        sa.Column("source_key", sa.String(512), primary_key=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "cost_meters",
        sa.Column("cluster_id", sa.String(40), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("cluster_name", sa.String(64), nullable=False),
        sa.Column("observed_at", _TS, nullable=False),
        sa.Column("billable", sa.Boolean(), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("subjects", sa.JSON(), nullable=False),
        sa.Column("open_records", sa.JSON(), nullable=False),
    )
    op.create_table(
        "cost_records",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(40), nullable=False),
        sa.Column("subject_name", sa.String(128), nullable=False),
        sa.Column("cluster_id", sa.String(40), nullable=False),
        sa.Column("start_at", _TS, nullable=False),
        sa.Column("end_at", _TS, nullable=False),
        sa.Column("node_seconds", sa.Float(), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
    )
    op.create_index("ix_cost_records_project_end", "cost_records", ["project", "end_at"])
    op.create_index("ix_cost_records_subject", "cost_records", ["kind", "subject_id"])
    op.create_index("ix_cost_records_cluster_id", "cost_records", ["cluster_id"])
    op.create_table(
        "budgets",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("alert_amount", sa.Float(), nullable=True),
        sa.Column("limit_amount", sa.Float(), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("since", _TS, nullable=False),
        sa.Column("alerted_at", _TS, nullable=True),
        sa.Column("exhausted_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    with op.batch_alter_table("tokens") as batch:
        batch.alter_column("role", existing_type=sa.String(16), type_=sa.String(64), nullable=True)
        batch.add_column(sa.Column("account_id", sa.String(40), nullable=True))
        batch.create_foreign_key(
            "fk_tokens_account_id_accounts", "accounts", ["account_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_tokens_account_id", ["account_id"])
    _accounts_for_existing_tokens()


def _accounts_for_existing_tokens() -> None:
    bind = op.get_bind()
    now = datetime.now(UTC)
    bind.execute(
        sa.text("INSERT INTO projects (name, description, created_at) VALUES (:n, :d, :t)"),
        {"n": "default", "d": "the project every resource starts in", "t": now},
    )
    accounts: dict[str, str] = {}
    for token_id, name, role in bind.execute(sa.text("SELECT id, name, role FROM tokens")):
        account_id = accounts.get(name)
        if account_id is None:
            account_id = accounts[name] = _id("acc")
            bind.execute(
                sa.text(
                    "INSERT INTO accounts (id, name, kind, created_at) "
                    "VALUES (:id, :name, 'service_account', :t)"
                ),
                {"id": account_id, "name": name, "t": now},
            )
        if role:
            bind.execute(
                sa.text(
                    "INSERT INTO role_bindings (id, account_id, project, role, created_at) "
                    "SELECT :id, :account, '*', :role, :t WHERE NOT EXISTS (SELECT 1 FROM "
                    "role_bindings WHERE account_id = :account AND project = '*' "
                    "AND role = :role)"
                ),
                {"id": _id("rb"), "account": account_id, "role": role, "t": now},
            )
        bind.execute(
            sa.text("UPDATE tokens SET account_id = :account WHERE id = :id"),
            {"account": account_id, "id": token_id},
        )


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_index("ix_tokens_account_id")
        batch.drop_constraint("fk_tokens_account_id_accounts", type_="foreignkey")
        batch.drop_column("account_id")
    op.execute("UPDATE tokens SET role = 'viewer' WHERE role IS NULL")
    with op.batch_alter_table("tokens") as batch:
        batch.alter_column("role", existing_type=sa.String(64), type_=sa.String(16), nullable=False)
    for table in (
        "budgets",
        "cost_records",
        "cost_meters",
        "log_cursors",
        "log_records",
        "audit_log",
        "custom_roles",
        "role_bindings",
        "accounts",
        "projects",
    ):
        op.drop_table(table)
