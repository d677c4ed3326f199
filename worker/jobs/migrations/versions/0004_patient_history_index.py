"""An index for a patient's history: (tenant, patient_ref, created_at) on assessments.

`GET /v1/patients/{ref}/assessments` (Store.patient_assessments) filters on tenant and patient_ref and
pages newest first by created_at; without this index it scans every assessment of the tenant.
Schema otherwise unchanged.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NAME = "ix_assessments_tenant_patient_created"


def upgrade() -> None:
    op.create_index(NAME, "assessments", ["tenant", "patient_ref", "created_at"])


def downgrade() -> None:
    op.drop_index(NAME, table_name="assessments")
