"""The PostgreSQL baseline: the switch's workload against a durable PostgreSQL ledger."""
