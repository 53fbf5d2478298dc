"""The roles of admin API tokens: ``admin`` may do everything; ``viewer`` reads everything but calendars;
``calendar`` reads calendars only (the application's own token)."""

API_ROLES = ("admin", "viewer", "calendar")
