"""tcp-lld: per-port TCP connection-state monitoring for Zabbix.

One socket scan feeds every item: `discovery` (LLD of listening ports), `stats` (one master JSON
document) and `count` (one integer), all read from one cached snapshot per network namespace.
"""

__version__ = "0.1.0"
