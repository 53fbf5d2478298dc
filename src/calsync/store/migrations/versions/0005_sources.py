"""two sources: calsync's own appointment ids, Graph subscription fields, and moves between sources

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 09:00:00.000000
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("app_id", sa.String(length=36), nullable=True))
    appointments = sa.table("appointments", sa.column("id", sa.BigInteger()), sa.column("app_id", sa.String()))
    connection = op.get_bind()
    for (row_id,) in connection.execute(sa.select(appointments.c.id)).all():
        connection.execute(appointments.update().where(appointments.c.id == row_id).values(app_id=str(uuid.uuid4())))
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.alter_column("app_id", existing_type=sa.String(length=36), nullable=False)
        batch_op.create_unique_constraint("uq_appointments_app_id", ["app_id"])
    with op.batch_alter_table("sync_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("moving_from", sa.String(length=16), nullable=True))
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("client_state", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("lifecycle_event", sa.String(length=32), nullable=True))
        # Which source made it (every one so far: EWS), so that a moved operator's old one is ended by its own.
        batch_op.add_column(sa.Column("source", sa.String(length=16), nullable=False, server_default="ews"))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("source")
        batch_op.drop_column("lifecycle_event")
        batch_op.drop_column("client_state")
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("sync_states", schema=None) as batch_op:
        batch_op.drop_column("moving_from")
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_constraint("uq_appointments_app_id", type_="unique")
        batch_op.drop_column("app_id")
