"""The built-in offline demos' data."""
