"""Config texts more than one test module reads."""

# The least a config needs (one instance, one service, one real server): everything
# else is a default, which is what tests of the defaults want.
MINIMAL = """
[[vrrp_instance]]
name = "VI_1"
interface = "lo"
vrid = 1
virtual_addresses = ["192.0.2.1/32"]

[[virtual_server]]
address = "192.0.2.1"
port = 80
[[virtual_server.real_server]]
address = "192.0.2.10"
port = 80
"""
