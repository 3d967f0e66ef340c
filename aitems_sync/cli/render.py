"""Human-readable renderings of results for a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aitems_sync.sync.bootstrap import BootstrapReport
from aitems_sync.sync.report import RunReport, null_cursor_message
from aitems_sync.sync.status import StatusReport

if TYPE_CHECKING:  # apply's modules load only when apply runs (start-up)
    from aitems_sync.commands import InitReport
    from aitems_sync.sync.apply import ApplyReport
    from aitems_sync.sync.provision import Plan

_COLUMNS = ("dataset", "status", "read", "new", "changed", "unchanged", "invalid", "sent",
            "batches", "ambiguous", "seconds")


def run_summary(report: RunReport, *, planned: bool = False) -> str:
    """A table of per-dataset counts, then the errors and ambiguous batches, if any.

    For a plan, ``sent`` and ``batches`` are what a run would send now.
    """
    columns: tuple[str, ...] = _COLUMNS
    if planned:
        columns = tuple({"sent": "to send", "batches": "batches to send"}.get(c, c)
                        for c in _COLUMNS)
    rows = [columns]
    for d in report.datasets:
        rows.append((d.dataset, d.status, str(d.read), str(d.new), str(d.changed),
                     str(d.unchanged), str(d.invalid), str(d.sent), str(d.batches),
                     str(len(d.ambiguous)), f"{d.seconds:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["plan (nothing sent or written)" if planned
             else f"run {report.run_id}: {report.status}"]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    for d in report.datasets:
        if d.error:
            lines.append(f"{d.dataset}: {d.error}")
        if d.null_cursor:
            lines.append(f"{d.dataset}: warning: {null_cursor_message(d.null_cursor)}")
        for batch in d.ambiguous:
            lines.append(f"{d.dataset}: ambiguous batch of {batch.rows} rows, cursor "
                         f"{batch.first_cursor} .. {batch.last_cursor}: {batch.reason}")
    return "\n".join(lines)


def bootstrap_summary(report: BootstrapReport) -> str:
    """One line per dataset: its status, rows, invalid rows and file; then the errors."""
    lines = [f"bootstrap {report.run_id}"]
    for d in report.datasets:
        size = f"{d.file_bytes / 1e6:.1f} MB" if d.file_bytes else "-"
        what = ("exported file" if d.rows is None  # --from: its rows are not read
                else f"{d.rows} rows, {d.invalid} invalid,")
        mark = f", mark {d.mark}" if d.mark is not None else ""
        lines.append(f"{d.dataset}: {d.status}, {what} {d.file or 'no file'} ({size}){mark}, "
                     f"{d.seconds:.1f} s")
    lines += [f"{d.dataset}: {d.error}" for d in report.datasets if d.error]
    lines += [f"{d.dataset}: warning: {null_cursor_message(d.null_cursor)}"
              for d in report.datasets if d.null_cursor]
    return "\n".join(lines)


def status_summary(report: StatusReport) -> str:
    """The service, then a line per dataset, then what is wrong."""
    s = report.service
    lines = [f"service {s.service_id}" + (f" ({s.name})" if s.name else "") + ": "
             + ", ".join(f"{k} {v}" for k, v in (("type", s.type), ("status", s.status),
                                                 ("cycle", s.term), ("schedule", s.schedule))
                         if v is not None)]
    for train in s.trains:
        lines.append(f"  train {train.get('trainId')}: {train.get('status')}, started "
                     f"{train.get('createdDate')}, finished {train.get('finishedDate') or '-'}")
    rows = [("dataset", "aitems", "schema", "last run", "sent", "invalid", "ambiguous",
             "quarantined", "mark")]
    for d in report.datasets:
        run = d.last_run
        rows.append((d.dataset, d.aitems_status or "?", d.schema_name or "?",
                     f"{run.finished_at or run.run_id} {run.status or run.run_status}"
                     if run else "never", str(run.sent if run else 0),
                     str(run.invalid if run else 0), str(run.ambiguous if run else 0),
                     str(d.quarantined), "-" if d.mark is None else str(d.mark)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    lines += [f"ALERT: {alert}" for alert in report.alerts]
    return "\n".join(lines)


_ACTIONS = {"+": "create", "~": "update in place", "-/+": "replace", "!": "refused",
            "...": "waits for bootstrap"}


def apply_plan(plan: Plan) -> str:
    """The plan as Terraform shows one: a symbol per change, its details indented below."""
    if plan.empty:
        return "No changes: AiTEMS matches the spec."
    lines = ["apply plan (+ create, ~ update in place, -/+ replace, ! refused, ... waits for "
             "bootstrap):", ""]
    for change in plan.changes:
        lines.append(f"  {change.symbol} {change.kind} {change.name}")
        lines.extend(f"      {detail}" for detail in change.details)
    counts = {symbol: sum(c.symbol == symbol for c in plan.changes) for symbol in _ACTIONS}
    lines += ["", "Plan: " + ", ".join(f"{counts[s]} to {_ACTIONS[s]}" if s in "+~-/+" else
                                      f"{counts[s]} {_ACTIONS[s]}" for s in _ACTIONS
                                      if counts[s] or s in ("+", "~", "-/+")) + "."]
    return "\n".join(lines)


def apply_summary(report: ApplyReport) -> str:
    """What apply did, step by step, and how it ended."""
    lines = [f"  done: {step}" for step in report.applied]
    lines.append(f"apply failed: {report.error}" if report.error else "apply complete")
    return "\n".join(lines)


def init_summary(report: InitReport) -> str:
    """What ``init`` wrote: per dataset its table, cursor and what to check; then the notes
    and the commands that try the spec against the emulator."""
    lines = [f"wrote {report.spec} and {report.seed} from {report.source}"]
    for d in report.datasets:
        picked = report.picked.get(d.name, "")
        lines.append(f"  {d.name} ({d.type}) from table {d.table}"
                     + (f": {picked}" if picked else ""))
        if d.cursor.column is not None:
            lines.append(f"    cursor {d.cursor.column}: {d.cursor.why}")
        lines.append(f"    fields {', '.join(f.name for f in d.fields)}")
        lines += [f"    left out {text}" for text in d.left_out]
        lines += [f"    todo: {text}" for text in d.todo]
    lines += [f"note: {note}" for note in report.notes]
    lines.append("Try it against the local AiTEMS emulator (the spec's defaults):")
    lines += [f"  {command}" for command in report.commands]
    return "\n".join(lines)
