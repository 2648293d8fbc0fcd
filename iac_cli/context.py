"""What every command shares: the resolved config, one API client, the output streams, and
the option types (``KEY=VALUE`` labels, ``--json``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from iac_cli.client import Api
from iac_cli.config import Config, load_config
from iac_cli.output import Output

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Built from the global options; the config and client are made on first use, so
    ``--help`` and usage errors never read a file or open a connection."""

    def __init__(self, url: str | None, token: str | None, *, color: bool = True) -> None:
        self.url = url
        self.token = token
        self.output = Output(color)
        self._config: Config | None = None
        self._api: Api | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.url, self.token)
        return self._config

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(self.config)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


pass_state = click.make_pass_decorator(State)


class KeyValue(click.ParamType[tuple[str, str]]):
    """``KEY=VALUE``, as in ``--label provider=aws``."""

    name = "KEY=VALUE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value  # already converted (a default)
        key, sep, val = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"{value!r} is not KEY=VALUE (e.g. provider=aws)", param, ctx)
        return key.strip(), val.strip()


def labels_option(help_text: str, flag: str = "--label") -> Callable[[F], F]:
    return click.option(
        flag, "labels", type=KeyValue(), multiple=True, metavar="KEY=VALUE", help=help_text
    )


def to_labels(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, value in pairs:
        if key in labels and labels[key] != value:
            raise click.BadParameter(
                f"label {key!r} is given twice ({labels[key]!r} and {value!r})",
                param_hint="'--label'",
            )
        labels[key] = value
    return labels


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON on stdout (for scripts)."
)
