"""clusters' Ray auth tokens encrypted at rest (clusters.ray_auth_token → ray_auth_token_encrypted)

Existing tokens are encrypted with the server's secret key (``RAYDECK_SECRET_KEY_FILE``),
which ``Database.migrate`` hands over as the ``secret_cipher`` attribute; a database that
holds clusters cannot be upgraded without it (nor downgraded: the downgrade decrypts).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_clusters = sa.table(
    "clusters",
    sa.column("id", sa.String),
    sa.column("ray_auth_token", sa.String),
    sa.column("ray_auth_token_encrypted", sa.Text),
)


def _cipher(rows: int):  # type: ignore[no-untyped-def]
    cipher = context.config.attributes.get("secret_cipher")
    if cipher is None and rows:
        raise RuntimeError(
            "migration 0009 re-encrypts the Ray tokens of existing clusters and needs the "
            "server's secret key: run it through Database.migrate(secret_box(...)) "
            "(`raydeck server` does)"
        )
    return cipher


def upgrade() -> None:
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ray_auth_token_encrypted", sa.Text(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(_clusters.c.id, _clusters.c.ray_auth_token)).all()
    cipher = _cipher(len(rows))
    for cluster_id, token in rows:
        bind.execute(
            _clusters.update()
            .where(_clusters.c.id == cluster_id)
            .values(ray_auth_token_encrypted=cipher.encrypt(token))
        )
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.alter_column("ray_auth_token_encrypted", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("ray_auth_token")


def downgrade() -> None:
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ray_auth_token", sa.String(length=128), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(_clusters.c.id, _clusters.c.ray_auth_token_encrypted)).all()
    cipher = _cipher(len(rows))
    for cluster_id, ciphertext in rows:
        bind.execute(
            _clusters.update()
            .where(_clusters.c.id == cluster_id)
            .values(ray_auth_token=cipher.decrypt(ciphertext))
        )
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.alter_column("ray_auth_token", existing_type=sa.String(length=128), nullable=False)
        batch_op.drop_column("ray_auth_token_encrypted")
