"""Wire protocol v1, sans I/O: ``fields`` (the value rules), ``messages`` (message types and their
validation), ``framing`` (frames and their size limit) and ``protocol`` (the per-connection state
machines). docs/protocol.md."""
