"""Backends: each registers, by op name, how to run every op of the table."""
