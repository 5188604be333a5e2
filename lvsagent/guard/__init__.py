"""The loop guard: what stops the backup's IPVS from balancing again what the master
already balanced to it (README, "Loop guard").

desired.py derives the guard's kernel state from the config (pure); driver.py applies
it at each transition and repairs drift; syncfollow.py moves the IPVS sync daemons
behind a transition, never on its path; peer.py finds the other box's address and
MAC.  The nft table itself is built in
netfilter/ruleset.py and written by netfilter/nft.py.
"""
