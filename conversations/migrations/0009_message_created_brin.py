import django.contrib.postgres.indexes
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0008_agent_turns"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="message",
            index=django.contrib.postgres.indexes.BrinIndex(
                fields=["created_at"], name="message_created_brin"
            ),
        ),
    ]
