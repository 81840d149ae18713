"""comments-api: the comments backend of a news site."""


def __getattr__(name: str) -> str:
    # Read on first use: importlib.metadata costs ~50 ms of imports, and `healthcheck`,
    # which Docker runs every 10 s, has no use for the version.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("comments-api")
    except PackageNotFoundError:  # running from a source tree without installing
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
