"""Issue 18 item 8 (parts): wound-photo upload links and the memory of decoding,
against the real console process (waitress; SQLite and PostgreSQL).

- A link is never built on the request's Host header: with no public address
  configured, "make an upload link" makes none (no row, nothing of the forged
  Host in the answer) and "send the link" sends none; with one configured,
  the link is on it whatever Host the request names.
- Decoding is bounded: the console's peak resident memory (VmHWM of the real
  process) grows by a bounded amount for one 40-megapixel upload and stays
  bounded for several uploaded at once.
"""
from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from PIL import Image
from sqlalchemy import func, select

from db.models import CasePhotoRow, UploadLinkRow
from db.photos import PhotoStore
from hotline.config import HotlineConfig
from tests.integration.browser_support import start_console
from tests.security.web_live import (LiveConsole, database, free_port, port_range,  # noqa: F401
                                    signed_in, world_console)

UTC = timezone.utc
PUBLIC = "https://hotline.example.org"
EVIL = "evil.example"
PORTS = port_range(1000)
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def bare(database, tmp_path_factory) -> Iterator[LiveConsole]:
    """A console with no public address (HOTLINE_CONSOLE_PUBLIC_URL unset)."""
    with world_console(database, tmp_path_factory, "photos", PORTS,
                       extra_env={"HOTLINE_CONSOLE_PUBLIC_URL": ""}, users=("admin",)) as found:
        yield found


@pytest.fixture(scope="module")
def public(bare) -> Iterator[LiveConsole]:
    """A second console process on the same database and instance, with a public address."""
    env = {**bare.env, "HOTLINE_CONSOLE_PUBLIC_URL": PUBLIC}
    console = start_console(env, free_port(PORTS), bare.log.with_name("console-public.log"))
    try:
        yield replace(bare, console=console, env=env,
                      sessions={"admin": signed_in(console.base_url, "admin")})
    finally:
        console.stop()


def _links(live: LiveConsole) -> int:
    with live.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(UploadLinkRow)).scalar_one()


def _post(live: LiveConsole, path: str) -> requests.Response:
    session = live.sessions["admin"]
    page = session.get(live.url + "/cases/C-1/photos", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    # requests matches cookies against a Host header it is given: send the cookie by hand.
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    return requests.post(live.url + path, data={"csrf_token": token, "back": "photos"},
                         headers={"Host": EVIL, "X-Forwarded-Host": EVIL, "Cookie": cookie},
                         allow_redirects=False, timeout=30)


def test_no_public_address_no_link_whatever_the_host_header(bare):
    before = _links(bare)
    made = _post(bare, "/cases/C-1/upload-link")
    assert made.status_code == 303, made.text[:300]
    assert made.headers["Location"] == "/cases/C-1/photos?link=no_url_link"
    assert EVIL not in made.text and EVIL not in made.headers["Location"]
    assert _links(bare) == before  # none made, so none can leak later either
    page = bare.sessions["admin"].get(bare.url + made.headers["Location"], timeout=30)
    assert "HOTLINE_CONSOLE_PUBLIC_URL" in page.text
    sent = _post(bare, "/cases/C-1/send-upload-link")
    assert sent.status_code == 303 and sent.headers["Location"].endswith("link=no_url")
    assert _links(bare) == before


def test_a_link_is_built_on_the_public_address_not_the_host_header(public):
    before = _links(public)
    made = _post(public, "/cases/C-1/upload-link")
    assert made.status_code == 201, made.text[:300]
    (url,) = re.findall(r'id="upload-link" value="([^"]+)"', made.text)
    assert re.fullmatch(re.escape(PUBLIC) + r"/u/[A-Za-z0-9_-]{24}", url), url
    assert EVIL not in made.text
    assert _links(public) == before + 1


# --------------------------------------------------------------------------- decoding memory


def _photo_40mp() -> bytes:
    """A 40-megapixel JPEG (7744 x 5165) that compresses like a photo (~7 MB)."""
    small = Image.effect_noise((7744 // 8, 5165 // 8), 64).convert("RGB")
    out = io.BytesIO()
    small.resize((7744, 5165), Image.Resampling.BILINEAR).save(out, "JPEG", quality=85)
    return out.getvalue()


def _peak_mib(live: LiveConsole) -> float:
    status = Path(f"/proc/{live.console.process.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def _upload(live: LiveConsole, data: bytes, answers: list) -> None:
    store = PhotoStore(live.engine, live.recordings, HotlineConfig(
        var_dir=Path(live.env["HOTLINE_VAR_DIR"]), instance=live.env["HOTLINE_INSTANCE"]).vault(),
        lambda: datetime.now(UTC))
    token, _ = store.create_link("C-1", by="test")
    answer = requests.post(f"{live.url}/u/{token}", files={"photos": ("w.jpg", data, "image/jpeg")},
                           timeout=300)
    answers.append(answer.status_code)


def _uploads_at_once(live: LiveConsole, data: bytes, n: int) -> list[int]:
    answers: list[int] = []
    threads = [threading.Thread(target=_upload, args=(live, data, answers)) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    return answers


def test_decoding_40_megapixel_uploads_is_bounded_in_memory(public):
    small = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(small, "JPEG")
    assert _uploads_at_once(public, small.getvalue(), 1) == [200]  # imports and caches warm
    base = _peak_mib(public)
    photo = _photo_40mp()
    assert _uploads_at_once(public, photo, 1) == [200]
    one = _peak_mib(public) - base
    assert _uploads_at_once(public, photo, 6) == [200] * 6
    six = _peak_mib(public) - base
    print(f"console peak RSS growth: one 40 MP upload {one:.0f} MiB, six at once {six:.0f} MiB")
    # Before the fix one upload cost ~620 MiB of peak RSS (three copies of the pixels
    # and an optimised-Huffman buffer) and nothing bounded how many ran at once. Each
    # decode now holds ~165 MiB, two run at a time, and freed buffers go back.
    assert one < 250, f"one 40 MP upload grew the console's peak RSS by {one:.0f} MiB"
    assert six < 450, f"six 40 MP uploads at once grew the console's peak RSS by {six:.0f} MiB"
    with public.engine.connect() as conn:
        sizes = conn.execute(select(CasePhotoRow.width, CasePhotoRow.height)).all()
    assert sizes.count((7744, 5165)) == 7  # kept whole, at full resolution
