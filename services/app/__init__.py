"""Composition roots: the embedded server, the cluster roles, the command lines.

The only package that knows every service; nothing imports it."""
