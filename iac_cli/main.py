"""The `iac` command: its global options, its command tree, and the one place where every
failure becomes a single ``iac: error: ...`` line on stderr and an exit code.

Exit codes: 0 success (or a run that awaits approval), 1 a failed/canceled/timed-out run, an
unreachable backend or a server error, 2 bad usage or a request the API refused (4xx),
130 interrupted.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from iac_cli.audit import audit
from iac_cli.context import State
from iac_cli.deployments import deployments
from iac_cli.drift import drift
from iac_cli.errors import EXIT_FAILURE, EXIT_USAGE, CliError
from iac_cli.notifications import notifications
from iac_cli.review import outputs, state_group
from iac_cli.runners import runners
from iac_cli.runs import logs, runs
from iac_cli.schedules import schedules
from iac_cli.start import INTERRUPTED, apply, destroy, plan
from iac_cli.tokens import me, tokens
from iac_cli.variables import variables


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--url",
    metavar="URL",
    help="Backend URL. Default: $IAC_URL, then the config file, then http://127.0.0.1:8000.",
)
@click.option(
    "--token",
    metavar="TOKEN",
    help="API token. Default: $IAC_TOKEN, then the config file.",
)
@click.option(
    "--no-color",
    is_flag=True,
    help="No colours, also stripped from terraform's output (same as NO_COLOR=1).",
)
@click.version_option(package_name="iac-runner", prog_name="iac")
@click.pass_context
def app(ctx: click.Context, url: str | None, token: str | None, no_color: bool) -> None:
    """Drive Terraform/OpenTofu runs on an iac-runner backend.

    The config file is $IAC_CONFIG or ~/.config/iac/config.toml, with keys url and token.
    Flags beat environment variables, which beat the file.
    """
    state = State(url, token, color=not (no_color or os.environ.get("NO_COLOR")))
    ctx.obj = state
    ctx.call_on_close(state.close)


app.add_command(runners)
app.add_command(deployments)
app.add_command(variables)
app.add_command(schedules)
app.add_command(tokens)
app.add_command(me)
app.add_command(audit)
app.add_command(notifications)
app.add_command(plan)
app.add_command(apply)
app.add_command(destroy)
app.add_command(runs)
app.add_command(logs)
app.add_command(outputs)
app.add_command(state_group)
app.add_command(drift)


def error(message: str) -> None:
    sys.stderr.write(f"iac: error: {' '.join(message.split())}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        result = app.main(args=argv, prog_name="iac", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return EXIT_USAGE
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        error(exc.format_message() + where)
        return EXIT_USAGE
    except click.ClickException as exc:
        error(exc.format_message())
        return exc.exit_code
    except CliError as exc:
        error(exc.message)
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        sys.stderr.write("iac: interrupted\n")
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`iac runs list | head -1`): quietly, like any Unix tool.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as exc:  # a bug in this CLI: one line, the traceback only on request
        if os.environ.get("IAC_DEBUG"):
            traceback.print_exc()
        error(f"internal error: {type(exc).__name__}: {exc} (set IAC_DEBUG=1 for a traceback)")
        return EXIT_FAILURE
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())
