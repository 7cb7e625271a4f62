"""``manage.py fluxus_dlq``."""
