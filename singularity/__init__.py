"""Singularity (Lei et al., 2022): single-frame video-language pre-training, retrieval and QA."""
