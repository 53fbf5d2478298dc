"""``python -m calsync`` runs the command line."""

from calsync.cli import app

app()
