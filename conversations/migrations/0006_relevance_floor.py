# The RAG relevance floor per conversation.

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0005_feedback_scale"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="relevance_floor",
            field=models.FloatField(
                blank=True,
                help_text="rag: passages less similar (cosine, 0-1) to the question are not given to the model. Empty means CHATTER_RAG_RELEVANCE_FLOOR.",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(0.0),
                    django.core.validators.MaxValueValidator(1.0),
                ],
            ),
        ),
    ]
