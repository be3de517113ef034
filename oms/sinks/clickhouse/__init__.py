"""ClickHouse access through clickhouse-connect: clients, migrations and row mapping."""
