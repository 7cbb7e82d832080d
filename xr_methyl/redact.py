"""Keep secrets out of what xr_methyl writes: store files, logs and error messages.

A warehouse URI may carry credentials (``scheme://user:token@host``,
``?secret_access_key=...``) and the environment holds keys and tokens.  Every
string that goes into a store's manifest, and every line the command line
prints or logs, passes through :func:`redact` first.
"""

from __future__ import annotations

import logging
import os
import re

MASK = "***"

# user:password@ in a URI
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
# key=value where the key names a secret (query strings, connection strings)
_SECRET_PARAM = re.compile(
    r"(?P<key>[A-Za-z0-9_.-]*(?:secret|token|password|passwd|pwd|credential|signature|session|"
    r"access[_-]?key|api[_-]?key|private[_-]?key)[A-Za-z0-9_.-]*)=(?P<value>[^&;\s'\"]+)",
    re.IGNORECASE,
)
# environment variables whose values are secrets
_SECRET_ENV = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|ACCESS_KEY|API_KEY|SESSION", re.IGNORECASE)


def _secret_env_values() -> list[str]:
    # Short values (e.g. "1", "true") would mask ordinary words: only real-looking secrets.
    values = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with URI credentials, secret-named parameters and secret env values masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m['key']}={MASK}", text)
    for value in _secret_env_values():
        text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's final message (attach it to handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
