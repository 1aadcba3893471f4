"""The trio layer: listeners, one task per connection, and the glue that feeds
bytes between sockets and the sans-I/O protocol handlers."""
