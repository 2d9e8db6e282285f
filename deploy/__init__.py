"""Operations files for trustgap: alert rules and dashboards as code, and their generator."""
