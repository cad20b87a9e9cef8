"""Render the Asterisk config dir of one instance from templates, the menu and the config."""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import jinja2

from hotline.config import SURGEON_HOST
from ivr.menu import Menu
from routing.queue import QUEUE_SETTINGS

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Where PJSIP listens, and so where RTP is bound and what the SDP offers: an
# address, never 0.0.0.0 -- a wildcard RTP socket makes Asterisk look its own
# address up in DNS on every call (acl.c ast_find_ourip, docs/security.md).
SIP_HOST = "127.0.0.1"

# Everything the dialplan and the SIP stack use, nothing more.
MODULES = (
    "res_pjproject", "res_sorcery_config", "res_sorcery_memory", "res_sorcery_astdb",
    "res_pjsip", "res_pjsip_session", "res_pjsip_pubsub", "res_pjsip_authenticator_digest",
    "res_pjsip_endpoint_identifier_user", "res_pjsip_endpoint_identifier_ip",
    "res_pjsip_caller_id", "res_pjsip_dtmf_info", "res_pjsip_sdp_rtp", "res_pjsip_logger",
    "res_pjsip_rfc3326", "chan_pjsip", "res_speech", "res_rtp_asterisk", "res_timing_timerfd",
    "codec_ulaw", "codec_alaw", "codec_a_mu", "format_wav", "format_pcm", "format_sln",
    "app_dial", "app_playback", "app_read", "app_record", "app_mixmonitor", "app_stack",
    "app_verbose", "app_exec", "app_db", "pbx_config", "res_agi", "res_musiconhold",
    "res_security_log", "func_channel", "func_strings", "func_global", "func_logic",
    "func_callerid", "func_cut", "func_math", "func_db", "func_hangupcause", "func_timeout",
    # The FastAGI request proof: SHA1() of the key FILE() reads (ivr/handlers.py).
    "func_sha1", "func_env",
    "bridge_simple", "bridge_native_rtp", "bridge_builtin_features", "bridge_holding",
    # CDR and CEL into SQLite files, for reconciliation (hotline/reconcile.py).
    "res_cdrel_custom", "cdr_sqlite3_custom", "cel_sqlite3_custom",
    # Major-incident mode: one ring-all queue per team (queues.conf).
    "app_queue",
)

CONFIG_FILES = (
    "asterisk.conf", "modules.conf", "logger.conf", "rtp.conf", "musiconhold.conf",
    "manager.conf", "pjsip.conf", "extensions.conf", "indications.conf", "cdr.conf",
    "cel.conf", "features.conf", "acl.conf", "udptl.conf", "ccss.conf", "pjproject.conf",
    "cdr_sqlite3_custom.conf", "cel_sqlite3_custom.conf", "queues.conf",
)


# A node's name becomes Asterisk's systemname, the prefix of every uniqueid
# and linkedid, and part of recording file names: lower-case letters, digits
# and inner dashes, short.
NODE_NAME = re.compile(r"[a-z][a-z0-9-]{0,22}[a-z0-9]", re.ASCII)


def check_agi_target(target: str) -> str:
    """A FastAGI target "IPv4:port"; ValueError otherwise.

    Only an IPv4 literal and a port: the value goes into the dialplan verbatim.
    """
    host, sep, port = str(target).rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        ok = sep == ":" and port.isascii() and port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"not a FastAGI target (ip:port): {str(target)[:60]!r}")
    return target


def agi_ask_order(targets: tuple[str, ...], first: int = 1) -> list[tuple[int, str]]:
    """(slot, target) in the order a node asks them: slot `first`, then on, wrapping.

    >>> agi_ask_order(("127.0.0.1:4573", "127.0.0.1:4574"), first=2)
    [(2, '127.0.0.1:4574'), (1, '127.0.0.1:4573')]
    """
    from ivr.channel_vars import MAX_SERVICE_SLOTS

    if not 1 <= len(targets) <= MAX_SERVICE_SLOTS:
        raise ValueError(f"1 to {MAX_SERVICE_SLOTS} FastAGI targets")
    if isinstance(first, bool) or not isinstance(first, int) or not 1 <= first <= len(targets):
        raise ValueError(f"agi_first must be a slot 1..{len(targets)}")
    slots = [(slot, check_agi_target(target)) for slot, target in enumerate(targets, start=1)]
    return slots[first - 1:] + slots[:first - 1]


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,  # a missing value is an error, not an empty string
        keep_trailing_newline=True,
        trim_blocks=True,
        autoescape=False,
    )


def render_all(
    *,
    menu: Menu,
    menu_source: str,
    instance: str,
    instance_dir: Path,
    prompts_dir: Path,
    recordings_dir: Path,
    ports,
    agi_host: str,
    ami_secret: str,
    sip_secret: str,
    console_ami_secret: str,
    surgeon_host: str = SURGEON_HOST,
    full_log: bool = False,
    agi_targets: tuple[str, ...] = (),
    agi_first: int = 1,
    node_name: str = "",
    agi_secret_file: Path | None = None,
) -> dict[str, str]:
    """Return {file name: text} for the instance's Asterisk config dir.

    `agi_targets` are the service instances' FastAGI addresses ("ip:port") by
    slot: the n-th is instance n, whose heartbeat is HOTLINE_HEARTBEAT_n. This
    node asks slot `agi_first` first, then the next ones, wrapping. They
    default to the one service beside it (`agi_host`, `ports.agi`).
    `node_name` is the node's Asterisk systemname in a cluster ("" for one node).
    `surgeon_host` is the surgeons' phone network's IPv4 address: the trunk is
    identified by it and rings it; it must differ from the callers' address.
    `agi_secret_file` is the FastAGI proof key's file (default instance_dir/agi.secret):
    only its path is rendered, the dialplan reads the key at each request.
    """
    agi_secret_file = agi_secret_file or instance_dir / "agi.secret"
    agi_order = agi_ask_order(tuple(agi_targets) or (f"{agi_host}:{ports.agi}",), agi_first)
    if ipaddress.IPv4Address(surgeon_host) == ipaddress.IPv4Address(SIP_HOST):
        # The callers' phones sit on SIP_HOST: matching the trunk there would
        # take every unauthenticated request from them for the trunk.
        raise ValueError(f"surgeon_host must not be {SIP_HOST}, the callers' address")
    if node_name and not NODE_NAME.fullmatch(node_name):
        raise ValueError(f"not a node name: {node_name!r}")
    for value in (instance_dir, prompts_dir, recordings_dir, agi_secret_file):
        # Paths go into the dialplan verbatim: no separators Asterisk would split on.
        if any(ch in str(value) for ch in ",;|&$[]{}()\"' \n\r"):
            raise ValueError(f"path not usable in a dialplan: {value!r}")
    context = dict(
        menu=menu, menu_source=menu_source, instance=instance, inst=str(instance_dir),
        module_dir="/usr/lib/x86_64-linux-gnu/asterisk/modules", modules=MODULES,
        prompts=str(prompts_dir), recordings=str(recordings_dir), ports=ports,
        agi_host=agi_host, ami_secret=ami_secret, console_ami_secret=console_ami_secret,
        sip_secret=sip_secret, surgeon_host=str(ipaddress.IPv4Address(surgeon_host)),
        sip_host=SIP_HOST,
        queue=QUEUE_SETTINGS, queue_teams=menu.teams, full_log=full_log,
        agi_order=agi_order, node_name=node_name, agi_secret_file=str(agi_secret_file),
    )
    env = _env()
    return {name: env.get_template(name + ".j2").render(**context) for name in CONFIG_FILES}


def write_config(files: dict[str, str], etc_dir: Path) -> None:
    """Write the files atomically; secrets inside, so the dir is private (0700)."""
    etc_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(etc_dir, 0o700)
    for name, text in files.items():
        tmp = etc_dir / (name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        tmp.replace(etc_dir / name)
