"""avatar package."""
