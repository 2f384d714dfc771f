"""body package."""
