"""The application's calendar: its model, occurrence expansion and iCalendar export."""
