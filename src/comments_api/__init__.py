"""comments-api: the comments backend of a news site."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("comments-api")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"
