"""live: camera and controllers in, stylized video and neural-synthesized audio out."""

__version__ = "0.1.0"
