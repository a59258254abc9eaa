from __future__ import annotations

from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        VectorExtension(),
        migrations.RunSQL(
            sql=(
                "CREATE UNLOGGED TABLE IF NOT EXISTS chatter_cache ("
                " cache_key text PRIMARY KEY,"
                " value bytea,"
                " counter bigint,"
                " expires double precision"
                ");"
                "CREATE INDEX IF NOT EXISTS chatter_cache_expires ON chatter_cache (expires);"
            ),
            reverse_sql="DROP TABLE IF EXISTS chatter_cache;",
        ),
    ]
