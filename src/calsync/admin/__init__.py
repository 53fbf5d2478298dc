"""The web admin: static HTML, CSS and JavaScript pages served by ``calsync serve`` at ``/admin/``.

The pages are plain files (no build step) in ``static/``; they are a client of the admin REST API at
``/api/v1`` and hold no server-side logic. :func:`calsync.admin.pages.routes` serves them.
"""
