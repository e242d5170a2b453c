"""``tarn maintain``: sweep what crashes leave behind (temporary raw copies, orphaned Delta data files) and,
with ``--vacuum``, files past the tables' retention. ``tarn up`` does the same hourly."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from tarn.cli.output import Format, console, emit_json, emit_rows

if TYPE_CHECKING:
    from tarn.lake import Lake

OutputOpt = typer.Option(Format.table, "--output", "-o", help="table, json or csv")


def register(app: typer.Typer, lake: Callable[[], Lake]) -> None:
    @app.command("maintain")
    def maintain_cmd(
        dry_run: bool = typer.Option(False, "--dry-run", help="list what would be removed, remove nothing"),
        older_than: float = typer.Option(
            3600.0, "--older-than", help="seconds: leftovers younger than this are left alone (in whole hours)"
        ),
        vacuum: bool = typer.Option(False, "--vacuum", help="also remove files past each table's retention"),
        output: Format = OutputOpt,
    ) -> None:
        """Remove leftovers of crashes: raw/.tmp copies and Delta data files no version references."""
        from tarn.orchestrator.maintenance import maintain

        sweep = maintain(
            lake(), dry_run=dry_run, tmp_older_than=older_than, orphan_older_than=older_than, vacuum=vacuum
        )
        if output == Format.json:
            emit_json(sweep.to_dict())
            return
        rows = [
            {
                "table": t.table,
                "orphans": len(t.orphans),
                "unfinished": len(t.staged),
                "expired": len(t.expired),
                "error": t.error,
            }
            for t in sweep.tables
        ]
        emit_rows(rows, ["table", "orphans", "unfinished", "expired", "error"], output)
        verb = "would remove" if dry_run else "removed"
        n = sum(len(t.orphans) + len(t.staged) + len(t.expired) for t in sweep.tables)
        console.print(f"{verb} {n} file(s) from tables; {sweep.tmp_removed} temporary raw copies removed")
        if any(t.error for t in sweep.tables):
            raise typer.Exit(1)
