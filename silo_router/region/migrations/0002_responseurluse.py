from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("silo_router_region", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="ResponseUrlUse",
            fields=[
                ("url_hash", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("uses", models.PositiveIntegerField(default=0)),
                ("first_used_at", models.DateTimeField(auto_now_add=True, db_index=True)),
            ],
        ),
    ]
