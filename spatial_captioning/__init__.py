"""Spatial image captioning: grid-position transformer in the Object Relation Transformer lineage, with SCST."""
