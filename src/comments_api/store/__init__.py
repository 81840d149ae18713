"""Persistence: tables, queries, transactions (the only SQL), transfer and migrations."""
