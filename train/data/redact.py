"""Redact: replace personal data and secrets by placeholders (stage 5).

Redaction edits text, it never drops a file; the number of replacements per kind is kept in the
record's `redactions` and summed in the report. Patterns aim at precision: a key that does not
look like one (low entropy, a placeholder) is left alone rather than mangling ordinary code.
"""
from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator

from train.data.config import DataConfig
from train.data.records import Record

PLACEHOLDERS = {
    "email": "<EMAIL>",
    "ip_address": "<IP_ADDRESS>",
    "private_key": "<PRIVATE_KEY>",
    "secret": "<SECRET>",
}

_PRIVATE_KEY = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+ )?PRIVATE KEY( BLOCK)?-----.*?-----END ([A-Z0-9 ]+ )?PRIVATE KEY( BLOCK)?-----",
    re.DOTALL,
)
# Tokens with a fixed, documented shape: matched whole.
_TOKENS = re.compile(
    r"\b(?:"
    r"AKIA[0-9A-Z]{16}"                           # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,}"                # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{40,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"              # Slack
    r"|AIza[0-9A-Za-z_\-]{35}"                    # Google API key
    r"|sk_live_[0-9A-Za-z]{20,}"                  # Stripe
    r"|sk-(?:proj-)?[A-Za-z0-9_\-]{32,}"          # OpenAI-style
    r"|hf_[A-Za-z0-9]{30,}"                       # Hugging Face
    r"|eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"  # JWT
    r")"
)
# `api_key = "..."`-style assignments: only the quoted value is replaced, and only when it looks
# random (see `_looks_secret`). Found value-first (a quoted string after `=` or `:`), then the
# name is checked in the text just before it: far cheaper than a case-insensitive scan for names.
_QUOTED_VALUE = re.compile(r"""[:=]{1,2}[ \t]*(["'])([A-Za-z0-9+/_\-=.~]{16,})\1""")
_SECRET_NAME = re.compile(
    r"""(?i)(?:api[_\-]?key|secret|token|passw(?:or)?d|access[_\-]?key|auth)\w*["']?[ \t]*$""")
_NAME_WINDOW = 64
# Literal pieces of the token shapes: a file without any of them skips that regex.
_TOKEN_HINTS = ("AKIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "AIza",
                "sk_live_", "sk-", "hf_", "eyJ")
# Emails are found from the "@domain" part, then extended left over the local part.
_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
# Four dotted numbers; the boundaries (no word character or dot around) are checked by hand.
_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV4_HINT = re.compile(r"\.[0-9]{1,3}\.[0-9]{1,3}\.")  # starts with a literal: a fast scan
# Domains reserved for documentation (RFC 2606) are not personal data.
_EXAMPLE_DOMAINS = re.compile(r"@(?:[\w\-]+\.)*(?:example\.(?:com|org|net)|localhost|test|invalid)$",
                              re.IGNORECASE)


def _entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


def _looks_secret(value: str) -> bool:
    """Random-looking: letters and digits mixed, high character entropy, not a placeholder."""
    if not (re.search(r"[A-Za-z]", value) and re.search(r"\d", value)):
        return False
    if re.fullmatch(r"(?i)(x+|your[_\-].*|.*(?:example|placeholder|dummy|changeme).*)", value):
        return False
    return _entropy(value) >= 3.5


def _public_ip(text: str) -> bool:
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return ip.is_global


def _secret_values(text: str) -> Iterator[tuple[int, int]]:
    for m in _QUOTED_VALUE.finditer(text):
        window = text[max(0, m.start() - _NAME_WINDOW):m.start()]
        if _SECRET_NAME.search(window) and _looks_secret(m.group(2)):
            yield m.start(2), m.end(2)


def _emails(text: str) -> Iterator[tuple[int, int]]:
    for m in _EMAIL_DOMAIN.finditer(text):
        start = m.start()
        while start > 0 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        if start < m.start() and not _EXAMPLE_DOMAINS.search(m.group(0)):
            yield start, m.end()


def _public_ips(text: str) -> Iterator[tuple[int, int]]:
    if not _IPV4_HINT.search(text):
        return
    for m in _IPV4.finditer(text):
        before = text[m.start() - 1] if m.start() else " "
        after = text[m.end()] if m.end() < len(text) else " "
        octets = m.group(0).split(".")
        if (before.isalnum() or before in "._" or after.isalnum() or after in "._"
                or sum(len(o) > 1 for o in octets) < 3 or not _public_ip(m.group(0))):
            continue
        yield m.start(), m.end()


def _splice(text: str, spans: Iterable[tuple[int, int]], placeholder: str, counts: Counter,
            kind: str) -> str:
    """Replace non-overlapping, increasing (start, end) spans of `text` by `placeholder`."""
    out, pos = [], 0
    for start, end in spans:
        if start < pos:
            continue
        out += (text[pos:start], placeholder)
        pos = end
        counts[kind] += 1
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str) -> tuple[str, Counter]:
    """`text` with secrets and personal data replaced, and the count of replacements per kind.

    Rules:
    - [private_key] a PEM private key block, BEGIN to END, becomes <PRIVATE_KEY>;
    - [secret] a token of a known provider shape (AWS, GitHub, Slack, Google, Stripe, OpenAI,
      Hugging Face, JWT), or the quoted value assigned to a name containing key/secret/token/
      password/auth when it mixes letters and digits with entropy >= 3.5 bits/char, becomes <SECRET>;
    - [email] an email address becomes <EMAIL>, except at example.com/org/net, localhost, .test;
    - [ip_address] a public IPv4 address becomes <IP_ADDRESS>; private, loopback, reserved and
      documentation ranges (127.0.0.1, 10.x, 192.168.x, 0.0.0.0, 203.0.113.x) are kept, they
      identify no one, and so are dotted numbers with fewer than three multi-digit parts, which
      are versions and section numbers far more often than hosts (7.1.4.34, 8.2.4.44; 8.8.8.8).
    """
    counts: Counter = Counter()
    if "PRIVATE KEY" in text:
        text, n = _PRIVATE_KEY.subn(PLACEHOLDERS["private_key"], text)
        counts["private_key"] += n
    if any(hint in text for hint in _TOKEN_HINTS):
        text, n = _TOKENS.subn(PLACEHOLDERS["secret"], text)
        counts["secret"] += n
    text = _splice(text, _secret_values(text), PLACEHOLDERS["secret"], counts, "secret")
    if "@" in text:
        text = _splice(text, _emails(text), PLACEHOLDERS["email"], counts, "email")
    text = _splice(text, _public_ips(text), PLACEHOLDERS["ip_address"], counts, "ip_address")
    return text, counts


def redact(records: Iterable[Record], config: DataConfig) -> Iterator[Record]:
    """Replace secrets and personal data in each kept file (stage 5); rules in `redact_text`.

    Sets `redactions` ({kind: count}) on records that had any. A no-op when `config.redact` is off.
    """
    for record in records:
        if "removed" in record or not config.redact:
            yield record
            continue
        text, counts = redact_text(record["text"])
        if counts:
            record = {**record, "text": text, "redactions": dict(counts)}
        yield record
