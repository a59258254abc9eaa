# The per-conversation settings' ranges as field validators, so the admin's forms hold them.

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0006_relevance_floor"),
    ]

    operations = [
        migrations.AlterField(
            model_name="conversation",
            name="max_tokens",
            field=models.PositiveIntegerField(
                blank=True,
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(200000),
                ],
            ),
        ),
        migrations.AlterField(
            model_name="conversation",
            name="memory_window",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Messages kept verbatim in the model's context.",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(2),
                    django.core.validators.MaxValueValidator(1000),
                ],
            ),
        ),
        migrations.AlterField(
            model_name="conversation",
            name="system_prompt",
            field=models.TextField(
                blank=True, validators=[django.core.validators.MaxLengthValidator(20000)]
            ),
        ),
        migrations.AlterField(
            model_name="conversation",
            name="temperature",
            field=models.FloatField(
                blank=True,
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(0),
                    django.core.validators.MaxValueValidator(2),
                ],
            ),
        ),
    ]
