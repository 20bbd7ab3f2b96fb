"""The tamper-evident audit trail: hash-chained rows and HMAC-signed checkpoints."""
