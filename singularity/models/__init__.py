"""Singularity model package: BEiT vision encoder, xbert text/fusion encoder, QA decoder."""
