"""The ``ghaf`` command line. Each domain contributes its own command group."""
