"""VisualCOMET (Park et al., ECCV 2020): GPT-2 with image features generating intent/before/after inferences."""
