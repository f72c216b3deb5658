"""The sans-I/O core: pool bookkeeping and stats, shared by every transport.

Nothing in this package imports ``socket``, ``threading``, ``asyncio`` or
``time``; a test keeps it that way.
"""
