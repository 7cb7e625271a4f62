"""The model the database tests write."""

from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=100)

    class Meta:
        app_label = "notes_app"

    def __str__(self) -> str:
        return self.text
