"""`lvsagent check` on scripts, hooks, tracked files and processes, sync groups, MISC_CHECK
and single directors: each rule rejects one mistake, located (file:line: key), and the
valid bases load.
"""

from __future__ import annotations

import pytest

from lvsagent.config.loader import parse_config
from lvsagent.config.schema import Command
from tests.unit.configs import GLOBAL, HEALTH, INSTANCE, REAL, SECOND, SERVICE, rule_rejects

SCRIPT = '\n[[vrrp_script]]\nname = "chk"\nscript = "/usr/bin/true"\n'
TFILE = '\n[[track_file]]\nname = "maint"\nfile = "/run/maint"\n'
TPROC = '\n[[track_process]]\nname = "web"\nprocess = "nginx"\n'
GROUP = '\n[[vrrp_sync_group]]\nname = "G"\ninstances = ["VI_1", "VI_2"]\n'
TRACKING = 'track_scripts = ["chk"]\ntrack_files = ["maint"]\ntrack_processes = ["web"]\n'
VI = INSTANCE + TRACKING + SCRIPT + TFILE + TPROC
MISC = (
    SERVICE + HEALTH + 'type = "misc"\n[virtual_server.health.misc]\nscript = "/bin/chk"\n' + REAL
)


def test_the_valid_bases_load() -> None:
    config = parse_config(VI, "t.toml")
    assert config.vrrp_scripts[0].script == Command(("/usr/bin/true",))
    assert config.vrrp_scripts[0].timeout == 1.0  # keepalived: the interval
    parse_config(INSTANCE + SECOND + GROUP, "t.toml")
    misc = parse_config(INSTANCE + MISC, "t.toml").virtual_servers[0].health.misc
    assert (misc.script, misc.timeout) == (Command(("/bin/chk",)), 6.0)  # timeout: interval
    director = parse_config(SERVICE + REAL, "t.toml")
    assert not director.vrrp_instances and director.virtual_servers[0].instance is None


def test_a_hook_is_a_string_of_words_an_array_or_a_table() -> None:
    hooks = (
        'notify_master = "/bin/x \'a b\' c"\nnotify_backup = ["/bin/y", "$HOME"]\n'
        'notify_fault = { script = "echo $HOME > /tmp/f", shell = true, user = "nobody" }\n'
    )
    parsed = parse_config(INSTANCE + hooks, "t.toml").vrrp_instances[0].hooks
    assert parsed is not None
    assert parsed.master == Command(("/bin/x", "a b", "c"))
    assert parsed.backup == Command(("/bin/y", "$HOME"))  # nothing expanded
    assert parsed.fault == Command(("echo $HOME > /tmp/f",), True, "nobody")


CASES: list[tuple[str, str, str, str]] = [
    # id, text, key of the one problem expected, fragment of its message
    ("hook-relative", INSTANCE + 'notify_master = "./x.sh"\n',
        "vrrp_instance[0].notify_master", "absolute path or a bare name"),
    ("hook-quote", INSTANCE + "notify = \"/bin/x 'a\"\n",
        "vrrp_instance[0].notify", "cannot split"),
    ("hook-type", INSTANCE + "notify_stop = 3\n",
        "vrrp_instance[0].notify_stop", "expected a command"),
    ("hook-table-key", INSTANCE + 'notify_fault = { script = "/bin/x", shel = true }\n',
        "vrrp_instance[0].notify_fault.shel", ""),
    ("script-user", GLOBAL + 'script_user = "-x"\n' + INSTANCE,
        "global.script_user", "user or group name"),
    ("fifo-relative", GLOBAL + 'notify_fifo = "fifo"\n' + INSTANCE,
        "global.notify_fifo", "absolute path"),
    ("notify-timeout", GLOBAL + "notify_timeout = 0\n" + INSTANCE,
        "global.notify_timeout", "greater than 0"),
    ("script-missing", INSTANCE + '\n[[vrrp_script]]\nname = "chk"\n',
        "vrrp_script[0].script", "required"),
    ("script-weight", VI.replace('"/usr/bin/true"\n', '"/usr/bin/true"\nweight = 255\n'),
        "vrrp_script[0].weight", "255"),
    ("script-rise", VI.replace('"/usr/bin/true"\n', '"/usr/bin/true"\nrise = 0\n'),
        "vrrp_script[0].rise", ""),
    ("script-dup", VI + SCRIPT, "vrrp_script[1].name", "duplicate vrrp_script name 'chk'"),
    ("ref-typo", VI.replace('track_scripts = ["chk"]', 'track_scripts = ["chk_"]'),
        "vrrp_instance[0].track_scripts[0]", "did you mean 'chk'"),
    ("file-relative", VI.replace('"/run/maint"', '"run/maint"'),
        "track_file[0].file", "absolute path"),
    ("file-overwrite", VI.replace('"/run/maint"\n', '"/run/maint"\ninit_overwrite = true\n'),
        "track_file[0].init_overwrite", "init_file"),
    ("process-long", VI.replace('"nginx"', '"a-sixteen-bytes!"'),
        "track_process[0].process", "15 bytes"),
    ("process-quorum", VI.replace('"nginx"\n', '"nginx"\nquorum = 3\nquorum_max = 2\n'),
        "track_process[0].quorum_max", "at least quorum (3)"),
    ("process-match", VI.replace('"nginx"\n', '"nginx"\nparam_match = "partial"\n'),
        "track_process[0].param_match", "only meaningful with args"),
    ("group-unknown", INSTANCE + SECOND + GROUP.replace('"VI_2"', '"VI_3"'),
        "vrrp_sync_group[0].instances[1]", "no vrrp_instance is named 'VI_3'"),
    ("group-one", INSTANCE + SECOND + GROUP.replace(', "VI_2"', ""),
        "vrrp_sync_group[0].instances", "at least two"),
    ("group-twice", INSTANCE + SECOND + GROUP + GROUP.replace('"G"', '"H"'),
        "vrrp_sync_group[1].instances[0]", "already in a sync group"),
    ("group-weight", INSTANCE + 'track_interfaces = [{ name = "eth1", weight = -10 }]\n'
        + SECOND + GROUP,
        "vrrp_instance[0].track_interfaces[0]", "tracking_weight = true"),
    ("misc-no-script", INSTANCE + SERVICE + HEALTH + 'type = "misc"\n' + REAL,
        "virtual_server[0].health.misc.script", "runs a command"),
    ("misc-timeout", INSTANCE + MISC.replace('"/bin/chk"\n', '"/bin/chk"\ntimeout = 5000\n'),
        "virtual_server[0].health.misc.timeout", ""),
    ("director-sync-daemon", GLOBAL + "ipvs_sync_daemon = true\n" + SERVICE + REAL,
        "global.ipvs_sync_daemon", "single director"),
    ("several-instances-sync-daemon",
        GLOBAL + "ipvs_sync_daemon = true\n" + INSTANCE + SECOND
        + SERVICE + 'instance = "VI_1"\n' + REAL
        + SERVICE.replace("port = 80", "port = 81") + 'instance = "VI_2"\n' + REAL,
        "virtual_server", "follow the same VRRP instance"),
    ("nothing", GLOBAL, "vrrp_instance", "or [[virtual_server]] (a single director)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "key", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule_rejects(text: str, key: str, fragment: str) -> None:
    rule_rejects(text, key, fragment)  # one problem, that key, located
