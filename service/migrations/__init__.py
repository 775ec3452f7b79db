"""The service's schema as Alembic migrations, one revision per change.

``service/migrate.py`` runs them at start-up; ``alembic revision`` (with
``script_location = funcx_flows.service:migrations``) writes a new one from
``script.py.mako``. Revisions are frozen: a later change of ``db.py`` is a new
revision, never an edit of an old one.
"""
