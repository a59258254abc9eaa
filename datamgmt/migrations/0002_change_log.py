"""The change log incrementals read (see datamgmt/pg.py): keys of changed rows and the id of
the transaction that changed them. Its triggers are installed by the first full backup."""

from django.db import migrations

FORWARD = """
CREATE TABLE datamgmt_change (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tbl text NOT NULL,
    pk jsonb,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX datamgmt_change_xid ON datamgmt_change (xid);
"""

BACKWARD = """
DROP TABLE IF EXISTS datamgmt_change;
DROP FUNCTION IF EXISTS datamgmt_track() CASCADE;
"""


class Migration(migrations.Migration):
    dependencies = [("datamgmt", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
