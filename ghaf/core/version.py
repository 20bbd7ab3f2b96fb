"""The ghaf release (``ghaf.__version__``), importable without the SDK that ``ghaf``'s
own ``__init__`` loads, so the server never imports the client."""

__version__ = "0.1.0"
