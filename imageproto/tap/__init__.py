"""twistd entry points: one module per plugin."""
