"""Defences against abuse by clients: limits on password guessing and registration."""
