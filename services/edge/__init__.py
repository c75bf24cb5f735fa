"""The edge service: terminates client streams (TCP with STARTTLS, direct TLS)."""
