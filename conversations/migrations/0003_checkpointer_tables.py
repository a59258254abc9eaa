"""LangGraph's checkpoint tables, created with the others (see checkpointer_setup)."""

from __future__ import annotations

from django.db import migrations


def create_checkpointer_tables(apps, schema_editor) -> None:
    from conversations.checkpointer import checkpointer_setup

    checkpointer_setup(using=schema_editor.connection.alias)


def drop_checkpointer_tables(apps, schema_editor) -> None:
    schema_editor.execute(
        "DROP TABLE IF EXISTS checkpoint_writes, checkpoint_blobs, checkpoints, "
        "checkpoint_migrations"
    )


class Migration(migrations.Migration):
    # PostgresSaver's migrations create indexes CONCURRENTLY: not inside a transaction.
    atomic = False

    dependencies = [("conversations", "0002_workflow_rag")]

    operations = [migrations.RunPython(create_checkpointer_tables, drop_checkpointer_tables)]
