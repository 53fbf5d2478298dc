"""The store: every table and every SQL statement of calsync lives in this package (SQLAlchemy 2 +
Alembic). Other packages call the functions of its modules with a session from :class:`Database`."""
