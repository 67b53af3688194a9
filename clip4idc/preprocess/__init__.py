"""Data preparation scripts of the original (Spot-the-Diff reformat, GT builders)."""
