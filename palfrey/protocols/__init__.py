"""Sans-I/O protocol handlers: bytes in, events out, bytes to write back.

Nothing in this package imports trio, sockets or clocks, so every handler can be
tested by feeding it bytes.
"""
