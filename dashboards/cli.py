"""``python -m dashboards {provision,export,render}``: Grafana dashboards and alert rules as
code, and pictures of the dashboards.

The entry point reads the environment once (``GRAFANA_*``, ``PROMETHEUS_URL`` and the
``FRAUD_*`` settings), flags win, and hands plain values down. Credentials have no default:
a token (``GRAFANA_TOKEN``) or a user and password. Exit codes: 0 done, 1 Grafana or
Prometheus unreachable, refusing the credentials or a change or a query (or a bad ``FRAUD_``
variable), 2 bad arguments, 130 interrupted. No error prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote, urlsplit, urlunsplit

from grafana_client import GrafanaApi

from dashboards import datasources
from dashboards.catalog import all_dashboards
from dashboards.datasources import DataSourceError
from dashboards.provision import Plan, Provisioner, ProvisionError, duration_s
from dashboards.render_prometheus import Prometheus, PrometheusError
from dashboards.render_queries import TimeRange
from models import arguments
from models.settings import Settings, SettingsError

ENV_HELP = """environment (flags win):
  GRAFANA_URL        Grafana base URL, e.g. http://127.0.0.1:3000
  GRAFANA_TOKEN      service-account token (preferred), or:
  GRAFANA_USER       user name, with
  GRAFANA_PASSWORD   its password (no default: nothing is assumed)
  PROMETHEUS_URL     Prometheus as Grafana's server reaches it (default {prometheus})
  FRAUD_REDIS_URL    Redis holding the recent-alerts stream, as Grafana reaches it
  FRAUD_NAMESPACE    namespace of that stream's key (fraud:alerts by default)"""

_positive = arguments.number(0.0, inclusive=False)


def _duration(text: str) -> float:
    """A Prometheus duration (``15m``, ``1h30m``) of more than zero, in seconds."""
    seconds = duration_s(text)
    if not seconds:
        raise argparse.ArgumentTypeError(f"not a duration such as 15m, 1h or 90s: {text!r}")
    return seconds


class UsageError(Exception):
    """Arguments or environment that parse but cannot work; reported like an argparse error."""


def build_parser() -> argparse.ArgumentParser:
    env_help = ENV_HELP.format(prometheus=datasources.DEFAULT_PROMETHEUS_URL)
    parser = argparse.ArgumentParser(
        prog="python -m dashboards",
        description="Grafana dashboards and alert rules for the fraud and spam stream.",
        epilog=env_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        """A sub-command that shows the environment too and reports usage errors as its own."""
        sub = arguments.subcommand(
            commands, name, help=summary, description=description, epilog=env_help
        )
        sub.set_defaults(command_parser=sub)
        return sub

    provision = command(
        "provision",
        "create or update data sources, folder, dashboards and alert rules in Grafana",
        "Create or update, by uid, the Prometheus and Redis data sources, the "
        "Fraudstream folder, the dashboards and the alert rules. Idempotent: what already "
        "matches is left alone, and each object is reported created, updated, unchanged or "
        "skipped.",
    )
    provision.add_argument("--grafana-url", metavar="URL", help="Grafana base URL (GRAFANA_URL)")
    provision.add_argument("--user", help="Grafana user (GRAFANA_USER)")
    provision.add_argument(
        "--password",
        help="Grafana password (GRAFANA_PASSWORD; prefer the variable: flags show in ps)",
    )
    provision.add_argument(
        "--prometheus-url",
        metavar="URL",
        help="Prometheus URL as Grafana's server reaches it (PROMETHEUS_URL, default "
        f"{datasources.DEFAULT_PROMETHEUS_URL})",
    )
    provision.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis of the recent-alerts stream as Grafana reaches it (FRAUD_REDIS_URL)",
    )
    provision.add_argument(
        "--scrape-interval",
        default=datasources.DEFAULT_SCRAPE_INTERVAL,
        metavar="DURATION",
        help="Prometheus's scrape_interval, for $__rate_interval (default %(default)s)",
    )
    provision.add_argument(
        "--timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="give up on a Grafana request after this long (default %(default)s)",
    )
    provision.add_argument(
        "--dry-run", action="store_true", help="report what would change, write nothing"
    )

    export = command(
        "export",
        "write the dashboards' JSON files (file provisioning, screenshots)",
        "Write one <uid>.json per dashboard into DIR, in the format of Grafana's "
        "dashboard file provisioning; they expect a Prometheus data source with uid "
        f"{datasources.PROMETHEUS_UID} (and a Redis one, {datasources.ALERTS_UID}).",
    )
    export.add_argument("dir", metavar="DIR", help="directory to write (created if missing)")
    _add_render(commands)
    return parser


RENDER_ENV_HELP = """environment:
  FRAUD_NAMESPACE    namespace of the recent-alerts stream named on the live-alerts panels

exit codes: 0 pictures written; 1 Prometheus unreachable, or a query refused (the pictures
are still written, the error shown on its panel); 2 bad arguments."""


def _add_render(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    render = arguments.subcommand(
        commands,
        "render",
        help="draw a PNG of each dashboard from its JSON, with data from Prometheus",
        description="Lay out each dashboard's panels by their gridPos and draw them with\n"
        "matplotlib, querying Prometheus's HTTP API with each panel's PromQL as Grafana\n"
        "would ($__rate_interval, $__interval and $__range filled in for the range).\n"
        "Writes DIR/<uid>.png per dashboard. Not Grafana's own rendering: panels on other\n"
        "data sources (the Redis live-alerts tables) say what they show in Grafana.",
        epilog=RENDER_ENV_HELP,
    )
    render.set_defaults(command_parser=render)
    render.add_argument(
        "--prometheus", required=True, metavar="URL", help="Prometheus base URL to query"
    )
    render.add_argument("--out", required=True, metavar="DIR", help="directory for the PNGs")
    render.add_argument(
        "--range",
        type=_duration,
        default=_duration("15m"),
        metavar="DURATION",
        help="time range every panel shows, ending now (default 15m; the dashboards' own "
        "ranges, 1h to 24h, are mostly empty on a freshly started stack)",
    )
    render.add_argument(
        "--dashboard",
        action="extend",
        nargs="+",
        metavar="UID",
        help="only these dashboards (repeatable; default all)",
    )
    render.add_argument(
        "--scrape-interval",
        type=_duration,
        default=_duration(datasources.DEFAULT_SCRAPE_INTERVAL),
        metavar="DURATION",
        help="Prometheus's scrape_interval, for $__rate_interval "
        f"(default {datasources.DEFAULT_SCRAPE_INTERVAL})",
    )
    render.add_argument(
        "--timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="give up on a Prometheus request after this long (default %(default)s)",
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(env)
        if args.command == "export":
            return _export(Path(args.dir), settings)
        if args.command == "render":
            return _render(args, settings)
        return _provision(args, env, settings)
    except UsageError as exc:
        command_parser: argparse.ArgumentParser = args.command_parser
        command_parser.error(str(exc))
    except (SettingsError, ProvisionError, PrometheusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _export(directory: Path, settings: Settings) -> int:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for board in all_dashboards(settings.namespace):
            path = directory / f"{board['uid']}.json"
            path.write_text(json.dumps(board, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            print(path)
    except OSError as exc:
        raise UsageError(f"cannot write {directory}: {exc.strerror or exc}") from None
    return 0


def _render(args: argparse.Namespace, settings: Settings) -> int:
    boards = all_dashboards(settings.namespace)
    known = [board["uid"] for board in boards]
    unknown = [uid for uid in args.dashboard or [] if uid not in known]
    if unknown:
        raise UsageError(f"no dashboard {', '.join(unknown)}; known: {', '.join(known)}")
    if args.dashboard:
        boards = [board for board in boards if board["uid"] in args.dashboard]
    parts = urlsplit(args.prometheus)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"Prometheus URL must be http(s)://host[:port], not {args.prometheus!r}")
    # matplotlib is loaded only here: provision and export do without it.
    from dashboards.render import render_all

    time_range = TimeRange(end=time.time(), span_s=args.range, scrape_s=args.scrape_interval)
    try:
        rendered = render_all(
            boards, Prometheus(args.prometheus, args.timeout), time_range, Path(args.out)
        )
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    failed = 0
    for picture in rendered:
        print(picture.path)
        for problem in picture.failed:
            print(f"query failed: {picture.uid} / {problem}", file=sys.stderr)
        failed += len(picture.failed)
    if failed:
        print(f"error: {failed} queries failed (shown on their panels)", file=sys.stderr)
        return 1
    return 0


def _provision(args: argparse.Namespace, env: Mapping[str, str], settings: Settings) -> int:
    url, credential = grafana_connection(args, env)
    try:
        plan = Plan(
            datasources=[
                datasources.prometheus(
                    args.prometheus_url
                    or env.get("PROMETHEUS_URL")
                    or datasources.DEFAULT_PROMETHEUS_URL,
                    args.scrape_interval,
                ),
                datasources.alerts(args.redis_url or settings.redis_url),
            ],
            dashboards=all_dashboards(settings.namespace),
        )
    except DataSourceError as exc:
        raise UsageError(str(exc)) from None
    api = GrafanaApi.from_url(url, credential=credential, timeout=args.timeout)
    results = Provisioner(api, url, dry_run=args.dry_run).run(plan)
    for result in results:
        print(result.line())
    tally = Counter(result.outcome for result in results)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(tally.items()))
    print(f"{summary}{' (dry run: nothing written)' if args.dry_run else ''}", file=sys.stderr)
    return 0


def grafana_connection(
    args: argparse.Namespace, env: Mapping[str, str]
) -> tuple[str, str | tuple[str, str]]:
    """Grafana's URL (without credentials, fit to print) and the credential to use."""
    raw = args.grafana_url or env.get("GRAFANA_URL")
    if not raw:
        raise UsageError("no Grafana URL: pass --grafana-url or set GRAFANA_URL")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"Grafana URL must be http(s)://host[:port][/path], not {raw!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise UsageError("Grafana URL has an invalid port") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    # grafana_client appends "api" to the path as is: a sub-path needs its trailing slash.
    path = parts.path.rstrip("/") + "/" if parts.path.strip("/") else ""
    url = urlunsplit((parts.scheme, netloc, path, "", ""))

    token = env.get("GRAFANA_TOKEN", "")
    if args.user or args.password or not token:
        # Flags win over the environment, a token over a user in the environment.
        user = args.user or env.get("GRAFANA_USER") or unquote(parts.username or "")
        password = args.password or env.get("GRAFANA_PASSWORD") or unquote(parts.password or "")
        if user and password:
            return url, (user, password)
        if user or password:
            raise UsageError("a Grafana user needs a password, and a password a user")
    if token:
        return url, token
    raise UsageError(
        "no Grafana credentials: set GRAFANA_TOKEN (a service-account token), or "
        "GRAFANA_USER and GRAFANA_PASSWORD (or pass --user and --password)"
    )


def run() -> NoReturn:
    sys.exit(main())
