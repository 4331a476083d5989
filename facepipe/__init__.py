"""facepipe: find, index and search human faces across large image collections."""

__version__ = "0.1.0"
