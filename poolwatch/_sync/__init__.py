"""The thread-based transport: connections with reader and writer threads."""
