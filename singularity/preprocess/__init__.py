"""Offline media preprocessing (``preprocess/compress.py``)."""
