"""``isolate env ...``: list, build, verify and pin the node's envs."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from cli.options import home_option, json_option
from cli.output import print_json, print_table, printable, short_hash
from cli.progress import ticking
from isolate.config import load_config
from isolate.services.home import open_store
from isolate.units import format_size

if TYPE_CHECKING:
    from envcache.cache import EnvCache


@click.group()
def env() -> None:
    """The node's virtualenvs: one per distinct lock, shared by every version using it."""


@env.command("list")
@home_option
@json_option
def list_(home: str | None, as_json: bool) -> None:
    """List envs: key, size, DAG versions using them, last use, state.

    \b
    Example:
      isolate env list --json
    """
    config = load_config(home)
    from envcache.gc import facts
    from isolate.services.environments import EnvResolver
    from isolate.services.gc import version_keys

    resolver = EnvResolver(config)
    with open_store(config) as store:
        used_by = version_keys(store, resolver)
    pins = resolver.cache.pins()
    rows: list[dict[str, Any]] = []
    for fact in facts(resolver.cache):
        with resolver.cache.use_lock(fact.key).try_exclusive() as free:
            in_use = not free
        state = "damaged" if fact.size is None else ("in use" if in_use else "ok")
        rows.append(
            {
                "key": fact.key,
                "size": fact.size,
                "created": fact.created,
                "last_used": fact.last_used,
                "state": state,
                "pinned": fact.key in pins,
                "used_by": [f"{dag}@{version}" for dag, version in used_by.get(fact.key, [])],
            }
        )
    if as_json:
        print_json(rows)
        return
    print_table(
        ["KEY", "SIZE", "USED_BY", "LAST_USED", "STATE"],
        [
            [
                short_hash(r["key"]),
                "-" if r["size"] is None else format_size(r["size"]),
                ", ".join(r["used_by"]) or "-",
                r["last_used"] or "never",
                r["state"] + (", pinned" if r["pinned"] else ""),
            ]
            for r in rows
        ],
    )


@env.command()
@click.argument("target", metavar="DAG_ID[@VERSION]")
@home_option
def build(target: str, home: str | None) -> None:
    """Build (or find) the env of a DAG version, latest by default; a damaged env is rebuilt.

    \b
    Example:
      isolate env build etl@3
    """
    dag_id, _, version = target.partition("@")
    if version and not version.isdigit():
        raise click.BadParameter(
            f"{target!r}: expected DAG_ID or DAG_ID@VERSION", param_hint="target"
        )
    config = load_config(home)
    with open_store(config) as store:
        from isolate.services.catalog import stored_version
        from isolate.services.environments import EnvResolver

        found = stored_version(store, dag_id, int(version) if version else None)
    with ticking(f"env for {dag_id} v{found.record.version}"):
        result = EnvResolver(config).ensure(found.spec, repair=True)
    what = "built" if result.built else "already built"
    click.echo(f"{dag_id} v{found.record.version}: env {result.key} {what} at {result.env.path}")
    for warning in result.env.warnings:
        click.echo(f"warning: {warning}", err=True)


@env.command()
@click.argument("key", required=False)
@click.option("--deep", is_flag=True, help="Also compare every file's sha256 (slower).")
@home_option
def verify(key: str | None, deep: bool, home: str | None) -> None:
    """Check envs against their manifests; exit 1 if any was modified after its build.

    \b
    Example:
      isolate env verify --deep
    """
    cache = _cache(home)
    keys = [_full_key(cache.keys(), key)] if key else cache.keys()
    damaged = 0
    for each in keys:
        differences = cache.verify(each, deep=deep)
        if differences:
            damaged += 1
            more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
            click.echo(f"{each}: MODIFIED: {differences[0]}{more}")
        else:
            click.echo(f"{each}: ok")
    if damaged:
        click.echo(
            f"{damaged} of {len(keys)} env(s) modified: run `isolate env build` for "
            "their DAGs to rebuild them",
            err=True,
        )
        sys.exit(1)


@env.command()
@click.argument("key")
@home_option
@json_option
def show(key: str, home: str | None, as_json: bool) -> None:
    """Show one env's manifest: what it was built from and how (a key prefix is enough).

    \b
    Example:
      isolate env show 3f2a9c
    """
    cache = _cache(home)
    full = _full_key(cache.keys(), key)
    found = cache.get(full)
    if found is None:
        raise click.ClickException(
            f"env {full} has no readable manifest: `isolate env verify {full[:12]}` says more"
        )
    manifest = found.manifest
    if as_json:
        shown = json.loads(manifest.to_json())
        shown["lock"] = json.loads(manifest.lock)  # the packages, as data, not a JSON string
        print_json(shown)
        return
    packages = [f"{p['name']}=={p['version']}" for p in json.loads(manifest.lock)]
    interpreter = manifest.interpreter
    version = ".".join(str(part) for part in interpreter.get("version_info", [])[:3])
    rows = [
        ("key", manifest.key),
        ("path", str(found.path)),
        ("python", f"{interpreter.get('path')} ({version})"),
        ("builder", f"{manifest.builder} v{manifest.builder_format_version}"),
        ("tools", ", ".join(f"{k} {v}" for k, v in sorted(manifest.tools.items()))),
        ("created", f"{manifest.created} (build {manifest.build_seconds:.2f} s)"),
        ("size", f"{format_size(manifest.total_size)} ({len(manifest.trees)} shared trees)"),
        ("packages", ", ".join(packages) or "(none)"),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':<10} {printable(value)}")
    for warning in found.warnings:
        click.echo(f"warning: {warning}", err=True)


def _cache(home: str | None) -> EnvCache:
    from isolate.services.environments import (
        EnvResolver,  # uv's and the lock's code: not to complete
    )

    return EnvResolver(load_config(home)).cache


def _full_key(keys: list[str], prefix: str) -> str:
    matches = [k for k in keys if k.startswith(prefix)]
    if len(matches) != 1:
        found = "no env" if not matches else f"{len(matches)} envs"
        raise click.BadParameter(f"{found} with a key starting {prefix!r}", param_hint="key")
    return matches[0]


@env.command()
@click.argument("key")
@click.option("-m", "--reason", default="", help="Why it is pinned (shown by gc).")
@home_option
def pin(key: str, reason: str, home: str | None) -> None:
    """Keep an env through every gc, whatever the policy.

    \b
    Example:
      isolate env pin 3f2a9c -m "audit of the March runs"
    """
    cache = _cache(home)
    full = _full_key(cache.keys(), key)
    cache.pin(full, reason)
    click.echo(f"pinned {full}")


@env.command()
@click.argument("key")
@home_option
def unpin(key: str, home: str | None) -> None:
    """Let gc remove an env again when no DAG version needs it.

    \b
    Example:
      isolate env unpin 3f2a9c
    """
    cache = _cache(home)
    full = _full_key(list(cache.pins()), key)
    cache.unpin(full)
    click.echo(f"unpinned {full}")
