"""Prefect tasks: thin wrappers that add retries, caching, device placement and tracking around `unseen`."""
