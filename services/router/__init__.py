"""The router service: delivery rules of RFC 6121 section 8 and the session registry."""
