"""`memaware datasets`, `memaware download` and `memaware build`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Column, Table

from ..errors import MemawareError
from . import app, user_errors
from .core import check_output, stage_updater

stdout = Console()


def dataset_rows() -> list[dict]:
    from ..data.registry import DATASETS

    rows = []
    for spec in DATASETS.values():
        reason = spec.available()
        rows.append({"name": spec.name, "kind": spec.kind, "description": spec.description, "needs": spec.needs,
                     "provenance": spec.provenance, "licence": spec.licence, "available": reason is None,
                     "reason": reason, "build": spec.layout if spec.build else None})
    return rows


def group_sizes(name: str) -> dict:
    from ..data.registry import load_dataset
    from ..featurize import default_cache_dir

    return load_dataset(name, {"cache_dir": default_cache_dir()}).group_sizes()


@app.command()
@user_errors
def datasets(
    name: Optional[str] = typer.Argument(None, help="show one data set and its group sizes per split"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
):
    """List the named data sets: kind, what each needs, and whether it is available here."""
    rows = dataset_rows()
    if name is not None:
        row = next((r for r in rows if r["name"] == name), None)
        if row is None:
            raise MemawareError(f"unknown data set '{name}' (known: {', '.join(r['name'] for r in rows)})")
        row["group_sizes"] = group_sizes(name) if row["kind"] != "layout" and row["available"] else None
        return print_json(row) if as_json else print_dataset(row)
    if as_json:
        return print_json(rows)
    fit = lambda key: Column(key, no_wrap=True, min_width=max(len(r[key]) for r in rows))  # noqa: E731
    table = Table(fit("name"), fit("kind"), Column("here", no_wrap=True, min_width=4),
                  Column("description", no_wrap=True, overflow="ellipsis", ratio=1), box=box.SIMPLE_HEAD,
                  show_edge=False, expand=True)
    for r in rows:
        table.add_row(r["name"], r["kind"], "yes" if r["available"] else "no", r["description"])
    stdout.print(table)
    stdout.print("`memaware datasets NAME` shows what a data set needs, why it is not available here, and its "
                 "group sizes.", highlight=False)


def print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2))


def print_dataset(row: dict) -> None:
    for key in ("name", "kind", "description", "needs", "provenance", "licence"):
        stdout.print(f"[bold]{key}:[/bold] {row[key]}", highlight=False, soft_wrap=True)
    stdout.print(f"[bold]available here:[/bold] {'yes' if row['available'] else 'no: ' + row['reason']}",
                 highlight=False, soft_wrap=True)
    if row["build"]:
        stdout.print(f"[bold]as a folder:[/bold] memaware build {row['name']} --to FOLDER (the {row['build']} "
                     "layout, for --backbone)", highlight=False, soft_wrap=True)
    sizes = row.get("group_sizes")
    if sizes:
        groups = sorted({g for per_split in sizes.values() for g in per_split})
        table = Table("split", *[f"group {g}" for g in groups], "total", title="examples per group (y,a)")
        for split, per_split in sizes.items():
            table.add_row(split, *[str(per_split.get(g, 0)) for g in groups], str(sum(per_split.values())))
        stdout.print(table)


@app.command()
@user_errors
def download(
    name: Optional[str] = typer.Argument(None, help="benchmark to fetch (see --list)"),
    to: Optional[Path] = typer.Option(None, help="parent folder (default: $MEMAWARE_DATA or ~/memaware-data)"),
    sources: Optional[Path] = typer.Option(None, help="a JSON source table to use instead of the built-in one"),
    unverified: bool = typer.Option(False, help="accept files whose sha256 is not known"),
    timeout: float = typer.Option(30.0, help="seconds to wait for the server"),
    list_sources: bool = typer.Option(False, "--list", help="print the table of sources and exit"),
):
    """Fetch a benchmark, check it and unpack it: the only command that uses the network."""
    from ..data import download as dl

    table = dl.load_sources(sources) if sources else dl.SOURCES
    if list_sources or name is None:
        return print_sources(dl.describe_sources(table))
    dl.check_known(name, table)
    if to is not None:
        check_output(to, "--to")
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        result = dl.download(name, to, table, allow_unverified=unverified, timeout=timeout,
                             progress=stage_updater(bar))
    stdout.print(f"{name}: {'already in' if result.already else 'unpacked into'} {result.target}",
                 highlight=False, soft_wrap=True)
    for f in result.files:
        if not f["verified"]:
            stdout.print(f"  {f['filename']}: not verified (no checksum known); its sha256 is {f['sha256']}",
                         highlight=False, soft_wrap=True)


@app.command()
@user_errors
def build(
    name: str = typer.Argument(..., help="data set to write as a layout folder (see `memaware datasets`)"),
    to: Path = typer.Option(..., help="the folder to write (it must not exist yet)"),
    option: list[str] = typer.Option([], "--option", help="a builder option, KEY=VALUE (e.g. scale=0.5)"),
):
    """Write a data set installed here as a folder in a standard layout, for whole networks (--backbone)."""
    import yaml

    from ..data.build import build as build_folder

    options = {}
    for assignment in option:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise MemawareError(f"--option {assignment!r}: expected KEY=VALUE, e.g. scale=0.5")
        options[key.strip()] = yaml.safe_load(value)
    check_output(to, "--to")
    with Console(stderr=True).status(f"building {name} into {to}"):
        folder, already = build_folder(name, to, **options)
    stdout.print(f"{name}: {'already built in' if already else 'written to'} {folder}", highlight=False,
                 soft_wrap=True)


def print_sources(rows: list[dict]) -> None:
    table = Table(Column("name", no_wrap=True), Column("file", overflow="fold"), "archive",
                  Column("url", overflow="fold"), "sha256", "size", "note")
    for r in rows:
        table.add_row(r["name"], r["filename"], r["archive"], r["url"] or "unknown", r["sha256"] or "unknown",
                      str(r["size"]) if r["size"] else "unknown", r["note"])
    stdout.print(table)
