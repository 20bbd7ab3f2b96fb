"""Model serving: registered versions over the Open Inference Protocol v2 and a plain
JSON route, with adaptive batching, behind ``deployment:invoke`` tokens (docs/serving.md).

``runtime`` loads a version through the registry's formats; ``tensors`` checks OIP
tensors against its signature; ``batching`` merges concurrent requests into one model
call; ``protocol`` and ``predict`` are the routes; ``auth`` checks tokens; ``app``
builds the ASGI app; ``standalone`` and ``cli`` are ``ghaf serve``.
"""
