"""Singularity data: annotation formats (spec 3.4), frame sampling (3.5), transforms (3.6), loaders (3.8)."""
