"""The asyncio transport: connections with a reader and a writer task each."""
