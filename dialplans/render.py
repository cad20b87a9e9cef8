"""Render the Asterisk config dir of one instance from templates, the menu and the config."""
from __future__ import annotations

import os
from pathlib import Path

import jinja2

from ivr.menu import Menu
from routing.queue import QUEUE_SETTINGS

TEMPLATES = Path(__file__).resolve().parent / "templates"

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
    surgeon_host: str = "127.0.0.1",
    full_log: bool = False,
) -> dict[str, str]:
    """Return {file name: text} for the instance's Asterisk config dir."""
    for value in (instance_dir, prompts_dir, recordings_dir):
        # Paths go into the dialplan verbatim: no separators Asterisk would split on.
        if any(ch in str(value) for ch in ",;|&$[]{}()\"' \n\r"):
            raise ValueError(f"path not usable in a dialplan: {value!r}")
    context = dict(
        menu=menu, menu_source=menu_source, instance=instance, inst=str(instance_dir),
        module_dir="/usr/lib/x86_64-linux-gnu/asterisk/modules", modules=MODULES,
        prompts=str(prompts_dir), recordings=str(recordings_dir), ports=ports,
        agi_host=agi_host, ami_secret=ami_secret, console_ami_secret=console_ami_secret,
        sip_secret=sip_secret, surgeon_host=surgeon_host,
        queue=QUEUE_SETTINGS, queue_teams=menu.teams, full_log=full_log,
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
