"""Semantic Relational Set Abstraction in videos (Andonian et al., ECCV 2020)."""
