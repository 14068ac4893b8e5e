"""Errors that memaware raises for bad input: the CLI prints them as one line and exits with code 2."""


class MemawareError(ValueError):
    """A problem with the user's input or configuration, stated in one line."""


class DataError(MemawareError):
    """A data file or array that does not meet memaware's data contract."""


class MissingExtraError(MemawareError):
    """An optional dependency is missing; the message says what to install."""


def require(module: str, extra: str):
    """Import an optional module or raise a MissingExtraError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{module} is not installed: pip install 'memaware[{extra}]'"
        ) from err
