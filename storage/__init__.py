"""PostgreSQL and Redis access, migrations, encryption of sensitive fields, embedded servers."""
