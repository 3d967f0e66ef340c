"""The local AiTEMS: an HTTP server on loopback for development, demos, tests and benchmarks.

- ``server``: ``EmulatorServer`` and seeds;
- ``faults``: the faults injected into uploads;
- ``handler``: routing, signature checks, fault injection and the answers;
- ``model``: schemas, datasets, services and what each dataset received;
- ``rows``: the rules for schema fields and upload rows;
- ``store``: the optional SQLite file that keeps it all across restarts.
"""
