"""Model sizes as data: CLIP tower configs (ViT-B-32, ViT-B-16, tiny) and decoder/cross configs."""
