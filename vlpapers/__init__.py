"""The ``vlpapers`` front door: ``vlpapers doctor`` and verbs that forward to each paper's own scripts."""
