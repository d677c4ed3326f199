"""One model version per assessment: the model set an assessment is scored with, and how long an item has
waited for a worker that holds it.

- assessments.models: expression -> {name, version, sha256}, written by the first worker that claims an item
  of the assessment (Store.claim_item); a worker whose model for an item's expression differs leaves the item.
- assessments.models_rev: bumped on every change of `models`, so that two workers pinning at once cannot
  overwrite each other (a conditional UPDATE on the revision they read; SQLite reads outside the write lock).
- items.pin_wait_since: when a worker last found no live worker serving the item's pinned model (cleared when
  one is seen); past FEQA_MODEL_PIN_WAIT_S the item fails with `model_version_gone`.
Existing assessments start unpinned (models_rev 0) and are pinned at their next claim.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assessments") as batch:
        batch.add_column(sa.Column("models", sa.JSON, nullable=True))
        batch.add_column(sa.Column("models_rev", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("pin_wait_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("pin_wait_since")
    with op.batch_alter_table("assessments") as batch:
        batch.drop_column("models_rev")
        batch.drop_column("models")
