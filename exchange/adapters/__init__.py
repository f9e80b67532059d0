"""Adapters named after their technology.

PostgreSQL, RabbitMQ, the management API, metrics, retry and signals.
"""
