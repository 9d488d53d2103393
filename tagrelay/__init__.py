"""tagrelay: dynamic email routing for a small domain (Mailgun → Pub/Sub → Mailgun)."""

__version__ = "0.1.0"
