"""ramcli: tag a photo library with RAM++ (Recognize Anything), then search it by what is in it."""

__version__ = "0.1.0"
