"""The sans-IO XMPP protocol core: no sockets, no asyncio, no database.

Bytes and elements in, events and elements out. Everything here is unit
tested and fuzzed without a socket.
"""
