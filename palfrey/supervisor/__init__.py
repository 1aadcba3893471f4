"""Processes: a supervisor that binds every socket once and runs workers (or reloads) over them."""
