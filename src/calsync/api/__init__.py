"""HTTP APIs served by calsync: the application calendar (read) under /api/v1."""
