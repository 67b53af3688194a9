"""CLIP4IDC (Guo et al., AACL 2022): CLIP adapted to image pairs for image difference captioning."""
