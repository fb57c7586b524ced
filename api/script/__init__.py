"""The script client's run, by job, with no click and no process exit in it (SPEC §6).

- `operation.py`: what to call (a declared operation, with its fixed options) for whom.
- `rows.py`: a `--from` CSV file read and checked, and the idempotency key of each row.
- `batch.py`: the run over the rows: pacing, one call per row through `api.client`
  (which retries), stopping on what the user cannot fix, and an interruption as an outcome.
- `report.py`: what the person at the terminal reads: per-row lines, the failed-rows CSV,
  the summary, errors; and the stderr console the progress bar and retry messages share.
- `exit_codes.py`: the one place that turns an outcome into the process exit code.

`api/cli/call.py` is the thin click layer that wires these together.
"""
