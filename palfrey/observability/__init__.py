"""What Palfrey tells operators: access-log formats, log formatting and metrics.

Layered just above the protocols: the bridge and the transport record into
it; it imports nothing of theirs.
"""
