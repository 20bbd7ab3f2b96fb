"""Where a deployment's replicas run, behind one small interface (base.py), one module a
host: embedded (processes on this machine); Ray Serve joins as ``ray``."""
