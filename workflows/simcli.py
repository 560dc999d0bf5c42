"""`lanedesk simulate`: a draft diagram's timeline for a scenario, on a virtual clock."""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy import select

from .cli import desk, fail, main
from .models import Group
from .output import dump_json
from .simulation import parse_scenario, simulate


@main.command("simulate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--scenario",
    "scenario_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="What happens to the ticket (YAML; docs/process-owners.md, “Simulating a draft”).",
)
@click.option("--json", "as_json", is_flag=True, help="The timeline as JSON.")
@click.option("--offline", is_flag=True, help="Do not read the desk's groups (only the default ones exist).")
@click.pass_context
def simulate_cmd(ctx: click.Context, file: Path, scenario_file: Path, as_json: bool, offline: bool) -> None:
    """Play a scenario on FILE in a throwaway desk and print the timeline.

    Nothing is deployed, no ticket is written and no mail is sent: the desk's SLA calendars are
    used, its database only read for its agent groups. Exit 1 with the problems of a broken
    diagram or scenario.
    """
    try:
        text = scenario_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{scenario_file}: cannot read the scenario: {exc}")
    scenario = parse_scenario(text, scenario_file.name)
    d = desk(ctx)
    groups: dict[str, str] = {}
    if not offline:
        with d.unit_of_work(readonly=True) as session:
            groups = {g.slug: g.name for g in session.scalars(select(Group))}
    timeline = simulate(d.settings, file.read_bytes(), file.name, scenario, groups=groups)
    click.echo(dump_json(timeline.to_dict()) if as_json else timeline.render())
