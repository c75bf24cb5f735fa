"""Shared types every layer uses: the stanza envelope, sessions, storage records,
feature declarations and the context their handlers get. No logic, no I/O."""
