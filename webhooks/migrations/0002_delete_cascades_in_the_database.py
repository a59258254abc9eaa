from __future__ import annotations

from django.db import migrations

# Deleting an endpoint (or its owner) while its deliveries are being sent: a worker may store
# an attempt for a delivery after Django's collector has deleted that delivery's attempts and
# before it deletes the delivery, and the deferred foreign key check then fails the delete at
# commit. With ON DELETE CASCADE in the database, deleting a delivery removes whatever
# attempts it has at that moment (and an endpoint its deliveries, an event its deliveries).
# An AlterField on these foreign keys would drop the clause: repeat this after one.
_CASCADE = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN
        SELECT c.conname, c.conrelid::regclass AS tbl, pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c
        WHERE c.contype = 'f'
          AND c.conrelid IN ('webhooks_deliveryattempt'::regclass, 'webhooks_delivery'::regclass)
          AND c.confrelid IN ('webhooks_delivery'::regclass, 'webhooks_endpoint'::regclass,
                              'core_event'::regclass)
          AND pg_get_constraintdef(c.oid) NOT LIKE '%ON DELETE%'
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', r.tbl, r.conname,
                       replace(r.def, ' DEFERRABLE', ' ON DELETE CASCADE DEFERRABLE'));
    END LOOP;
END $$;
"""

_NO_CASCADE = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN
        SELECT c.conname, c.conrelid::regclass AS tbl, pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c
        WHERE c.contype = 'f'
          AND c.conrelid IN ('webhooks_deliveryattempt'::regclass, 'webhooks_delivery'::regclass)
          AND pg_get_constraintdef(c.oid) LIKE '%ON DELETE CASCADE%'
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', r.tbl, r.conname,
                       replace(r.def, ' ON DELETE CASCADE', ''));
    END LOOP;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0001_endpoints_deliveries"), ("core", "0002_event_outbox")]

    operations = [migrations.RunSQL(sql=_CASCADE, reverse_sql=_NO_CASCADE)]
