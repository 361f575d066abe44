"""Minimal Django projects that the control-ack benchmark serves with gunicorn.

One settings module per target (``settings_bare``, ``settings_silo``, ``settings_bolt``),
all on ``common``; ``wsgi`` is the one entry point. Import them with ``bench/`` on the
path (``bench/control_ack.py`` does that for gunicorn).
"""
