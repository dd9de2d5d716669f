"""Choosing what the Improve step trains on: filters (tau, percentile, gamma, top-k, dedup) and Best-of-N."""
