"""``isolate completion SHELL``: print click's completion script, and complete DAG ids.

The script is the one ``_ISOLATE_COMPLETE=<shell>_source isolate`` prints: at each TAB the
shell runs ``isolate`` again with ``_ISOLATE_COMPLETE=<shell>_complete``, and click answers
from the command tree before any command runs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import click
from click.shell_completion import CompletionItem, get_completion_class

from isolate.config import load_config

SHELLS = ("bash", "zsh", "fish")

# A TAB must not hang the shell: an unreachable database server (no connect timeout by
# default) or a SQLite file locked by a migration gets this long, then nothing is offered.
LOOKUP_SECONDS = 2.0


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    Install it once, for your user, then open a new shell:
      bash (4.4 or newer), in ~/.bashrc:    eval "$(isolate completion bash)"
      zsh, in ~/.zshrc after compinit:      eval "$(isolate completion zsh)"
      fish:  isolate completion fish > ~/.config/fish/completions/isolate.fish

    An eval runs isolate each time a shell starts (about a second). To avoid that, save the
    script where the shell loads it on first use:

    \b
      bash (bash-completion):  ~/.local/share/bash-completion/completions/isolate
      zsh:   a file named _isolate in a directory on $fpath (set before compinit)

    DAG ids are completed from the database of the home named by a --home given earlier on
    the command line, else $ISOLATE_HOME (or the default home); if it cannot be read
    quickly, nothing is offered.

    \b
    Example:
      isolate completion fish > ~/.config/fish/completions/isolate.fish
    """
    root = ctx.find_root()
    prog_name = root.info_name or "isolate"
    comp_cls = get_completion_class(shell)
    assert comp_cls is not None  # click.Choice allows only shells click knows
    comp = comp_cls(root.command, {}, prog_name, complete_var(prog_name))
    click.echo(comp.source(), nl=False)


def complete_var(prog_name: str) -> str:
    """The environment variable click's ``main`` reads for ``prog_name`` (click.core)."""
    name = prog_name.replace("-", "_").replace(".", "_")
    return f"_{name}_COMPLETE".upper()


def complete_dag_ids(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """``shell_complete=`` for a DAG_ID argument or option: the stored DAG ids starting with
    ``incomplete``; nothing if the home or its database cannot be read quickly.

    Never raises: an exception here would print a traceback into the user's prompt.
    """
    home = ctx.params.get("home")
    found = within(LOOKUP_SECONDS, lambda: stored_dag_ids(home if isinstance(home, str) else None))
    return [CompletionItem(dag_id) for dag_id in found if dag_id.startswith(incomplete)]


def stored_dag_ids(home: str | None) -> list[str]:
    """The DAG ids in ``home``'s store; raises if the home or its database is unreadable.

    Reads only: a SQLite file that does not exist is not opened (connecting would create
    it), nor one named by a URL with a driver or options.
    """
    from isolate.services.listing import dag_summaries
    from isolate.store.lite import sqlite_file

    config = load_config(home)
    url = config.database_url
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path is None or not os.access(path, os.R_OK):
            return []
    return [summary.dag_id for summary in dag_summaries(config)]


def within(seconds: float, work: Callable[[], list[str]]) -> list[str]:
    """``work()``'s result if it returns within ``seconds``; else, or if it raises, nothing.

    A late ``work`` is left behind in a daemon thread: the completing process exits right
    after answering and takes it along.
    """
    done: list[list[str]] = []

    def run() -> None:
        try:
            done.append(work())
        except BaseException:  # noqa: S110 (an uncaught one would print a traceback)
            pass

    thread = threading.Thread(target=run, name="isolate-complete", daemon=True)
    thread.start()
    thread.join(seconds)
    return done[0] if done else []
