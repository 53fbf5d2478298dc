"""Ways of talking to Exchange. ``base`` defines the one interface; each backend is one module."""
