"""Codecs: classical (Pillow) anchors, and later the course's own codecs."""
