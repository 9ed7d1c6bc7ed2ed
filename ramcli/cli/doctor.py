"""`ramcli doctor`: versions, providers, models, paths: what a bug report needs."""

from __future__ import annotations

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import app


@app.command()
def doctor(json_out: o.JsonOpt = False) -> None:
    """Show versions, execution providers (what really loads), models, cache and index paths.

    Example: `ramcli doctor --json`
    """
    from ramcli.models.catalog import doctor_report

    with render.errors():
        report = doctor_report()
    if json_out:
        render.emit_json(report)
        return
    table = render.table(show_header=False, box=None)
    for key, value in report.items():
        if key == "models_broken" and value:
            for m in value:
                table.add_row(f"[bold red]{key}[/]", render.escape(f"{m['name']}: {m['problem']} ({m['fix']})"))
            continue
        text = (", ".join(map(str, value)) or "(none)") if isinstance(value, list) else str(value)
        table.add_row(f"[bold]{key}[/]", render.escape(text))
    render.out().print(table)
