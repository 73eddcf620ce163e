"""IOU gateway: a Redis-backed metering gateway that caps what AI agents can spend."""
