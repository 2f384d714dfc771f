"""icon package."""
