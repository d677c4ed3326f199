"""The audit log refuses TRUNCATE too (PostgreSQL); server-side web sessions.

- PostgreSQL: a BEFORE TRUNCATE statement trigger on audit_log (the row triggers of 0001 only see
  UPDATE and DELETE; TRUNCATE emptied the log). SQLite has no TRUNCATE.
- web_sessions: the browser's cookie carries a random session id, not the API key; only its SHA-256 is
  stored, with the key it was opened with, its expiry and when it was signed out.

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
                   "FOR EACH STATEMENT EXECUTE FUNCTION feqa_audit_append_only()")
    op.create_table(
        "web_sessions",
        sa.Column("digest", sa.String(64), primary_key=True),          # sha256(session id), hex
        sa.Column("key_id", sa.String(32), nullable=False, index=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("web_sessions")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
