"""Bearer-token authentication and role checks for the JSON API.

    @bp.get("/teams")
    @require(*READERS)
    def teams(): ...  # g.api_token is the caller's `db.tokens.ApiToken`

A request names its token in `Authorization: Bearer hl_...`. Only the
calendar feeds (`query_token=True`) also take `?token=hl_...`, because phone
calendars cannot send headers. No token, an unknown one or a revoked one:
401 with `WWW-Authenticate: Bearer`; a valid token whose role may not do
this: 403.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from console import ApiError, services
from db.tokens import ApiToken, TokenRole

F = TypeVar("F", bound=Callable[..., Any])

ADMINS = (TokenRole.ADMIN, TokenRole.SUPERVISOR)  # every roster read and write
READERS = ADMINS + (TokenRole.DEPARTMENT_HEAD, TokenRole.SURGEON)  # the JSON reads
ANY_ROLE = tuple(TokenRole)  # the .ics feeds


def _unauthorized(message: str, message_zh: str, *, invalid: bool) -> ApiError:
    challenge = 'Bearer realm="hotline"'
    if invalid:
        challenge += ', error="invalid_token"'
    return ApiError(401, "unauthorized", message, message_zh,
                    headers={"WWW-Authenticate": challenge})


def presented_token(query_token: bool) -> str | None:
    """The token the request carries (header first), or None."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return ""  # some other scheme, or an empty one: a bad token, not a missing one
    if query_token:
        return request.args.get("token")
    return None


def authenticate(query_token: bool = False) -> ApiToken:
    presented = presented_token(query_token)
    if presented is None:
        raise _unauthorized("an API token is required (Authorization: Bearer ...)",
                            "需要 API 访问令牌（Authorization: Bearer ...）", invalid=False)
    token = services().tokens.authenticate(presented) if presented else None
    if token is None:
        raise _unauthorized("the API token is unknown or revoked", "访问令牌无效或已吊销",
                            invalid=True)
    if query_token and "Authorization" not in request.headers and token.role is not TokenRole.CALENDAR:
        # A URL ends up in access logs, proxies and phone backups: only a
        # read-only calendar token may travel in one.
        raise forbidden("only a calendar token may be given in the URL; send others in the "
                        "Authorization header", "链接中只能使用日历订阅令牌，其他令牌请放在 Authorization 头中")
    return token


def require(*roles: TokenRole, query_token: bool = False) -> Callable[[F], F]:
    """The view needs a live token of one of `roles`; the token goes to `g.api_token`."""
    allowed = frozenset(roles)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            token = authenticate(query_token)
            if token.role not in allowed:
                raise forbidden(f"a {token.role.value} token may not do this",
                                "该令牌的角色无权执行此操作")
            g.api_token = token
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate


def current_token() -> ApiToken:
    return g.api_token


def forbidden(message: str, message_zh: str) -> ApiError:
    return ApiError(403, "forbidden", message, message_zh)


def acting_surgeon(claimed: int | None, *, what: str) -> int:
    """The surgeon a write acts as: a bound token's own surgeon, or `claimed` for admins.

    A bound token (department head, surgeon) that names anyone else is refused
    (403); an admin or supervisor must say whom they act for.
    """
    token = current_token()
    if token.role.bound:
        assert token.surgeon_id is not None
        if claimed is not None and claimed != token.surgeon_id:
            raise forbidden(f"this token acts only as surgeon {token.surgeon_id}",
                            f"该令牌只能以医生 {token.surgeon_id} 的身份操作")
        return token.surgeon_id
    if claimed is None:
        raise ApiError(400, "invalid_request", f"{what}: 'by' (the surgeon acting) is required",
                       f"{what}：缺少 by（执行操作的医生）")
    return claimed
