"""calsync keeps an application's own calendar in step with Microsoft Exchange."""

__version__ = "0.1.0"
