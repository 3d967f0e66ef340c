"""One sync run: leases, extraction, preparing rows, the diff against the ledger, batches, the
upload window, commits in order, signals and the report; and quarantine retry.

- ``engine``: a run (and a plan) over the selected datasets;
- ``dataset``: one dataset's loop from extracted rows to committed batches;
- ``prepare``: a chunk of rows shaped, validated, encoded and hashed, in columns;
- ``worker``: the same in a second process (``python -m aitems_sync.sync.worker``);
- ``batches``: the pure rules: ledger comparison, last version wins, cutting into batches;
- ``window``: the upload window: batches on the wire, committed strictly in order;
- ``leases``: taking, renewing and giving back the datasets' leases;
- ``signals``: SIGTERM and SIGINT: stop reading, finish, commit, exit;
- ``report``: what a run did, per dataset;
- ``quarantine``: ``quarantine retry``;
- ``metrics``: pushing a run's figures to a Pushgateway.
"""
