"""oms: an order management system for Deribit built on Kafka stream processing."""

__version__ = "0.1.0"
