"""The server: root nursery, lifespan, listeners, signals and the shutdown sequence."""
