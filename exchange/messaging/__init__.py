"""Messaging built on the adapters: the transactional outbox and its relay."""
