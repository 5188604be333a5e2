"""``lvsagent convert``: keepalived.conf to lvsagent TOML (lexer, tree, mappers, writer)."""
