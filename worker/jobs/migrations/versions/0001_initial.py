"""Initial schema: keys, assessments, items, stage durations, audit log, worker heartbeats.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False, index=True),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
    )
    op.create_table(
        "assessments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False, index=True),
        sa.Column("protocol", sa.String(32), nullable=True),
        sa.Column("patient_ref", sa.String(256), nullable=True),
        sa.Column("idempotency_key", sa.String(256), nullable=True),
        sa.Column("created_at", TZ, nullable=False, index=True),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("deleted_at", TZ, nullable=True),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_assessment_idempotency"),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("assessment_id", sa.String(32), sa.ForeignKey("assessments.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("expression", sa.String(64), nullable=False),
        sa.Column("video_key", sa.String(256), nullable=True),
        sa.Column("video_sha256", sa.String(64), nullable=True),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("percent", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("artifacts", sa.JSON, nullable=True),
        sa.Column("queued_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("video_deleted_at", TZ, nullable=True),
        sa.UniqueConstraint("assessment_id", "idx", name="uq_item_index"),
    )
    op.create_table(
        "stage_durations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.Integer, nullable=False, index=True),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("at", TZ, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TZ, nullable=False, index=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("assessment_id", sa.String(32), nullable=True, index=True),
        sa.Column("detail", sa.JSON, nullable=True),
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker_id", sa.String(128), primary_key=True),
        sa.Column("at", TZ, nullable=False),
        sa.Column("models", sa.JSON, nullable=True),
        sa.Column("warmed", sa.Boolean, nullable=False),
        sa.Column("detail", sa.JSON, nullable=True),
    )
    _audit_append_only()


def _audit_append_only() -> None:
    """The audit trail outlives deletions: the database itself refuses UPDATE and DELETE on it."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                       "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END")
    elif dialect == "postgresql":
        op.execute("CREATE OR REPLACE FUNCTION feqa_audit_append_only() RETURNS trigger AS $$ "
                   "BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION feqa_audit_append_only()")


def downgrade() -> None:
    for name in ("worker_heartbeats", "audit_log", "stage_durations", "items", "assessments", "api_keys"):
        op.drop_table(name)
