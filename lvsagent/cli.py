"""The ``lvsagent`` command: run, check, plan, status, drain, undrain, convert.

Every verb that reads the config takes it as ``--config FILE`` (a positional
FILE is accepted too); the default is /etc/lvsagent/lvsagent.toml.

Exit codes follow sysexits(3) so that systemd's journal and scripts can tell
a bad config (78) from a missing privilege (77), a state directory that cannot
be written (73) or another OS failure (71).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import faulthandler
import logging
import socket
import sys
from typing import NoReturn

from lvsagent import __version__
from lvsagent.config.interfaces import missing_interfaces
from lvsagent.config.loader import ConfigError, format_problems, load_config
from lvsagent.config.schema import DEFAULT_CONFIG_PATH, Config

EX_OK = 0
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_OSERR = 71
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_NOPERM = 77
EX_CONFIG = 78

log = logging.getLogger("lvsagent")


class _Parser(argparse.ArgumentParser):
    """argparse with sysexits: a usage error exits 64 (EX_USAGE), not argparse's 2.

    Scripts and systemd tell a mistyped command line (64) from a bad config (78).
    """

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _add_config(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--config FILE``, the documented form, and a positional FILE for the same thing.

    Every verb that reads the config takes it the same way; the positional form
    stays because ``lvsagent check FILE`` is what people type (and older units ran).
    """
    where = f" (default {default})" if default else ""
    parser.add_argument("--config", metavar="FILE", help=f"the config file{where}")
    parser.add_argument("config_file", nargs="?", metavar="FILE", help="the same as --config")
    parser.set_defaults(config_default=default)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lvsagent", description=__doc__)
    p.add_argument("--version", action="version", version=f"lvsagent {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    run = sub.add_parser("run", help="run the daemon in the foreground")
    _add_config(run, DEFAULT_CONFIG_PATH)
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    check = sub.add_parser("check", help="validate a config file and report every error")
    _add_config(check, DEFAULT_CONFIG_PATH)
    check.add_argument(
        "--print",
        action="store_true",
        help="print the effective config, every default filled in, as TOML",
    )
    plan = sub.add_parser("plan", help="print what the config would change in IPVS; change nothing")
    _add_config(plan, DEFAULT_CONFIG_PATH)
    status = sub.add_parser("status", help="ask the running daemon for its state")
    status.add_argument("--json", action="store_true", help="the snapshot as JSON, for scripts")
    status.add_argument(
        "--socket", help="the control socket (default: the config's, else the default)"
    )
    _add_config(status, None)
    for verb, what in (("drain", "weight 0 in IPVS until undrained; its checks go on"),
                       ("undrain", "back to its configured weight (if its check says up)")):
        act = sub.add_parser(verb, help=f"{verb} a real server of a virtual server: {what}")
        act.add_argument("service", metavar="VS", help="the virtual server, as status names it")
        act.add_argument("rs", metavar="RS", help="the real server, IP:PORT")
        act.add_argument("--socket", help="the control socket (default: the config's, else the "
                         "default)")  # fmt: skip
        act.add_argument("--config", metavar="FILE", help="the config whose control socket to use")
        act.set_defaults(config_file=None, config_default=None)
    convert = sub.add_parser("convert", help="print an lvsagent TOML for a keepalived.conf")
    convert.add_argument("keepalived_conf")
    convert.add_argument("-o", "--output", help="write the TOML here instead of stdout")
    convert.add_argument(
        "-i", "--config-id", help="the box, for '@id' lines (keepalived -i; default: this host)"
    )
    return p


def _config_path(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The config named by --config or the positional FILE (both only if they agree)."""
    given = {path for path in (args.config, args.config_file) if path is not None}
    if len(given) > 1:
        parser.error(f"two config files given ({' and '.join(sorted(given))}); name one")
    if given and args.verb in ("status", "drain", "undrain") and args.socket is not None:
        parser.error(f"{args.verb}: give --socket or a config, not both")
    default: str | None = args.config_default
    return given.pop() if given else default


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(format_problems(exc.problems), file=sys.stderr)
        print(
            f"lvsagent: {exc.total} error(s) in {path}; nothing was changed",
            file=sys.stderr,
        )
        return None
    except OSError as exc:
        print(f"lvsagent: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return None


def cmd_check(path: str, print_effective: bool = False) -> int:
    """Exit 0 for a valid file (78 otherwise), with a warning for each interface not here."""
    config = _load(path)
    if config is None:
        return EX_CONFIG
    from lvsagent.vrrp.ownaddr import check_problems

    own = check_problems(config)  # a VIP that is an address of this host, if it has the link
    if own:
        print(format_problems(own), file=sys.stderr)
        print(f"lvsagent: {len(own)} error(s) in {path}", file=sys.stderr)
        return EX_CONFIG
    try:
        with open(path, encoding="utf-8") as file:  # again, only to locate the warnings
            text = file.read()
    except OSError:
        text = ""
    for warning in missing_interfaces(config, text, _interface_exists):
        print(warning, file=sys.stderr)
    if print_effective:
        from lvsagent.config.effective import effective_toml

        header = f"the effective config of {path}, defaults written out (lvsagent {__version__})"
        print(effective_toml(config, header), end="")
        return EX_OK
    print(
        f"{path}: OK ({len(config.vrrp_instances)} VRRP instance(s), "
        f"{len(config.virtual_servers)} virtual server(s))"
    )
    return EX_OK


def _interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def cmd_plan(path: str) -> int:
    config = _load(path)
    if config is None:
        return EX_CONFIG
    from lvsagent.ipvs.desired import desired_table
    from lvsagent.ipvs.kernel import IpvsKernel
    from lvsagent.ipvs.plan import Plan, plan

    async def read_and_plan() -> Plan:
        async with IpvsKernel() as kernel:
            actual = await kernel.dump()
        return plan(desired_table(config), actual, config.global_.foreign_services)

    try:
        result = asyncio.run(read_and_plan())
    except OSError as exc:
        print(f"lvsagent: cannot read the IPVS table: {exc}", file=sys.stderr)
        return EX_NOPERM if exc.errno in (errno.EPERM, errno.EACCES) else EX_OSERR
    text = str(result)
    print(text if text else f"{path}: the kernel already matches; nothing to change")
    return EX_OK


def cmd_run(path: str, level: str) -> int:
    from lvsagent.observe.journal import setup_logging

    # The journal with structured fields under systemd, plain stderr lines otherwise.
    setup_logging(level)
    # pyroute2 logs every netlink message at debug; ours are the ones an operator needs.
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    config = _load(path)
    if config is None:
        return EX_CONFIG
    from lvsagent.daemon.app import serve
    from lvsagent.daemon.pidlock import AlreadyRunning
    from lvsagent.daemon.scripting import ScriptSetupError
    from lvsagent.statedir import StateDirError
    from lvsagent.vrrp.addresses import InterfaceError

    _raise_fd_limit()
    # systemd's watchdog kills a stuck loop with SIGABRT: the stack of every thread then
    # goes to stderr (the journal), so the operator sees where it was stuck.
    faulthandler.enable()
    try:
        asyncio.run(serve(config))
    except InterfaceError as exc:
        log.error("%s; nothing was changed", exc)
        return EX_CONFIG
    except ScriptSetupError as exc:
        log.error("%s; nothing was changed", exc)
        return exc.exit_status
    except StateDirError as exc:  # before PermissionError: no capability is missing here
        log.error("%s", exc.strerror)
        return EX_CANTCREAT
    except AlreadyRunning as exc:
        log.error("%s; nothing was changed", exc)
        return EX_TEMPFAIL
    except PermissionError as exc:
        log.error("%s: lvsagent needs CAP_NET_ADMIN and CAP_NET_RAW (run as root)", exc)
        return EX_NOPERM
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            log.error("%s: lvsagent needs CAP_NET_ADMIN and CAP_NET_RAW (run as root)", exc)
            return EX_NOPERM
        log.error("stopped by an OS error: %s", exc)
        return EX_OSERR
    log.info("lvsagent stopped")
    return EX_OK


def _raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard one: the health checks' concurrency is half of it.

    systemd's unit sets LimitNOFILE; run by hand, the soft default (1024) would cap
    the checks in flight at 512 and slow a large config's rounds.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:  # a seccomp filter may refuse it: keep the soft one
            log.warning("cannot raise the open-files limit to %d (%s); kept %d", hard, exc, soft)


def cmd_status(socket_path: str | None, config_path: str | None, as_json: bool) -> int:
    """Exit 0 with the report; 69 when no daemon answers, 77 without access, 76 on nonsense."""
    import time

    from lvsagent.observe.control import ControlError, format_status, status

    path = _socket(socket_path, config_path)
    if path is None:
        return EX_CONFIG
    try:
        snap = status(path)
    except ControlError as exc:
        print(f"lvsagent: {exc}", file=sys.stderr)
        if exc.denied:
            return EX_NOPERM
        return EX_UNAVAILABLE if exc.unavailable else EX_PROTOCOL
    print(snap.to_json() if as_json else format_status(snap, time.time()))
    return EX_OK


def _socket(socket_path: str | None, config_path: str | None) -> str | None:
    """The control socket: given, or the config's, or the default; None: a bad config."""
    from lvsagent.config.schema import Global

    if socket_path is None and config_path is not None:
        config = _load(config_path)
        if config is None:
            return None
        socket_path = config.global_.control_socket
    return socket_path or Global().control_socket


def cmd_drain(verb: str, service: str, rs: str, socket_path: str | None,
              config_path: str | None) -> int:  # fmt: skip
    """Exit 0 when done (or already so); 64 for a server the daemon's config lacks; 69, 77."""
    from lvsagent.observe.control import ControlError, act

    path = _socket(socket_path, config_path)
    if path is None:
        return EX_CONFIG
    try:
        message = act(path, verb, service, rs)
    except ControlError as exc:
        print(f"lvsagent: {exc}", file=sys.stderr)
        if exc.denied:
            return EX_NOPERM
        if exc.refused:
            return EX_USAGE
        return EX_UNAVAILABLE if exc.unavailable else EX_PROTOCOL
    print(message)
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verb == "convert":
        from lvsagent.convert.command import cmd_convert

        return cmd_convert(args.keepalived_conf, args.output, args.config_id)
    path = _config_path(parser, args)
    if args.verb == "check":
        assert path is not None
        return cmd_check(path, print_effective=args.print)
    if args.verb == "plan":
        assert path is not None
        return cmd_plan(path)
    if args.verb == "status":
        return cmd_status(args.socket, path, args.json)
    if args.verb in ("drain", "undrain"):
        return cmd_drain(args.verb, args.service, args.rs, args.socket, path)
    if args.verb == "run":
        assert path is not None
        return cmd_run(path, args.log_level)
    return EX_USAGE


if __name__ == "__main__":
    sys.exit(main())
