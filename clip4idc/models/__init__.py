"""CLIP4IDC model: image-pair CLIP encoder, CLIP text encoder, UniVL-style caption decoder."""
from clip4idc.models.clip4idc import CLIP4IDC, build_model
from clip4idc.models.config import ClipConfig, DecoderConfig, load_clip_config, load_decoder_config

__all__ = ["CLIP4IDC", "build_model", "ClipConfig", "DecoderConfig", "load_clip_config", "load_decoder_config"]
