"""Redact: replace personal data and secrets by placeholders (stage 5).

Redaction edits text, it never drops a file; the number of replacements per kind is kept in the
record's `redactions` and summed in the report.

Secrets are found by `detect-secrets` (Yelp's scanner, the one BigCode's PII pipeline uses): its
plugins for provider keys and tokens (AWS, GitHub, GitLab, Slack, Stripe, npm, PyPI, SendGrid,
Azure, Twilio, ...), private keys, JSON web tokens, high-entropy quoted strings, credentials in
URLs and secret-named assignments (`password = "..."`), each finding passed through the heuristic
filters BigCode's pipeline keeps (templates such as `${VAR}` or `<password>`, UUIDs, sequential
strings, `*_id` names) and the library's two that read the value alone (`$VAR`, no letter or digit).
The library's indirect-reference filter is not applied as the library does, to every plugin and to
the whole line: it dropped every literal on a line with a call (`Github("ghp_...")`,
`boto3.client(..., aws_secret_access_key="...")`); here it reads only the keyword plugin's unquoted
values (`password = get_password()` in a shell or YAML file), where a call is a reference. Nor is
the UUID filter applied to the npm plugin: legacy npm tokens are UUIDs. This module adds only what
the library does not do, each rule in `redact_text`:

- where a finding ends: a plugin reports a value (sometimes only the token's prefix, such as `ghp`,
  or only the `BEGIN ... PRIVATE KEY` header line), and redaction must cover the whole token or the
  whole key block, BEGIN to END across real line breaks and `\n` escapes alike (a key in a string,
  a GCP service-account JSON);
- e-mail addresses and public IPv4 addresses (the library's IP plugin has no notion of private or
  documentation ranges);
- passwords in URLs with the user and host kept (the library's rule stops at `!` and other
  sub-delimiters inside the password, and replacing the whole URL would lose the host);
- HTTP `Authorization:` header credentials, a few token shapes no plugin knows (Hugging Face,
  Google API keys, GitHub fine-grained tokens, current OpenAI keys, bare npm tokens, Azure Service
  Bus `SharedAccessKey=` and SAS `sig=` values), and random-looking quoted values of token/auth
  names (the keyword plugin's names are password, secret, api_key and the like).

Documentation placeholders are kept as they are: RFC 2606 domains (example.com, .test, .invalid,
localhost), AWS's published example keys (`...EXAMPLE...`) and obvious placeholders (`changeme`,
`your_password_here`, `xxxx`).

Every rule is linear in the length of the text: the own patterns have no nested or overlapping
quantifiers and start at a literal, and the library's plugins (some of which backtrack
quadratically, or worse, on a long line) see at most `WINDOW` characters at a time, so the cost
of a window is bounded and the total grows with the number of windows. The plugins whose patterns
need a literal run only where it occurs (`_GATES`), the keyword plugin sees runs of word
characters cut at `_MAX_WORD` and the npm plugin smaller windows (`tests/train/test_data_redact.py`
feeds each rule 1 MB of adversarial input).
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.filters import heuristic
from detect_secrets.plugins.keyword import DENYLIST as _KEYWORDS
from detect_secrets.settings import get_settings

from train.data.config import DataConfig
from train.data.records import Record

PLACEHOLDERS = {
    "email": "<EMAIL>",
    "ip_address": "<IP_ADDRESS>",
    "private_key": "<PRIVATE_KEY>",
    "secret": "<SECRET>",
}

# detect-secrets plugins, by class name. Left out: IPPublicDetector (public IPs are the own rule
# below, which keeps documentation ranges and version-like numbers).
PLUGINS = (
    "ArtifactoryDetector", "AWSKeyDetector", "AzureStorageKeyDetector", "BasicAuthDetector",
    "CloudantDetector", "DiscordBotTokenDetector", "GitHubTokenDetector", "GitLabTokenDetector",
    "Base64HighEntropyString", "HexHighEntropyString", "IbmCloudIamDetector", "IbmCosHmacDetector",
    "JwtTokenDetector", "KeywordDetector", "MailchimpDetector", "NpmDetector", "OpenAIDetector",
    "PrivateKeyDetector", "PypiTokenDetector", "SendGridDetector", "SlackDetector",
    "SoftlayerDetector", "SquareOAuthDetector", "StripeDetector", "TelegramBotTokenDetector",
    "TwilioKeyDetector",
)
WINDOW = 2000
"""Longest piece of a line the library's plugins see at once (see the module docstring); pieces
overlap by a fifth, so a secret up to 400 characters long is seen whole in one of them."""

# Verification sends a found secret to its provider: never, whatever the settings say.
get_settings().disable_filters("detect_secrets.filters.common.is_ignored_due_to_verification_policies")
_CLASSES = {cls.__name__: cls for cls in get_mapping_from_secret_type_to_class().values()}
_PLUGINS = [_CLASSES[name]() for name in PLUGINS]
_KEY_PLUGINS = {"PrivateKeyDetector"}
_MIN_KEYWORD_VALUE = 6  # `'PWD_STATE': 'yes'` is a setting, not a password
# Plugins whose every pattern contains a literal (or one of the keyword plugin's names) run only
# on the windows that contain it: the same findings, faster, and no quadratic backtracking on a
# window of slashes (npm), of `sk-` (OpenAI) or of keyword-free text (keywords).
_GATES = {
    "KeywordDetector": re.compile("|".join(_KEYWORDS), re.IGNORECASE),
    "NpmDetector": re.compile(re.escape("_authToken")),
    "OpenAIDetector": re.compile("T3BlbkFJ"),
    "IbmCloudIamDetector": re.compile("key|pwd|pass|token", re.IGNORECASE),
    "IbmCosHmacDetector": re.compile("secret", re.IGNORECASE),
    "SoftlayerDetector": re.compile("key|pwd|pass|token|softlayer", re.IGNORECASE),
}
# The keyword plugin's names are `\w*KEYWORD\w*` patterns, cubic in the length of a run of word
# characters; it sees runs cut to `_MAX_WORD` characters (a space in place of every 48th of a run,
# which no name or value this long needs: the finding is mapped back to the original text and
# extended over the token there).
_MAX_WORD = 48
_LONG_WORD = re.compile(r"\w{%d}(?=\w)" % _MAX_WORD)
# The npm plugin's pattern (`//.+/:_authToken=`) is quadratic in the length of its window; an
# .npmrc line is short, so it sees windows of this size.
_SMALL_WINDOWS = {"NpmDetector": 400}

# Characters a token is made of: a finding is extended over them to the right (a plugin may report
# only a token's prefix, e.g. `ghp` of a GitHub token).
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+/=.")
# The keyword plugin reads a file type from the name; shell and env files assign without quotes,
# like the config files the library knows.
_KEYWORD_FILETYPE = {".sh": "x.cnf", ".bash": "x.cnf", ".zsh": "x.cnf", ".env": "x.cnf"}
_PLACEHOLDER_VALUE = re.compile(
    r"(?i)(?:x{3,}|\*{3,}|\.{3,}|your[_\-].*|.*(?:example|placeholder|dummy|changeme|redacted).*"
    r"|pass(?:word)?|secret|token|none|null|true|false)")

# Token shapes no detect-secrets plugin knows: matched whole, each from a literal prefix.
_TOKENS = re.compile(
    r"\b(?:"
    r"github_pat_[A-Za-z0-9_]{40,255}"              # GitHub fine-grained token
    r"|AIza[0-9A-Za-z_\-]{35}"                      # Google API key
    r"|sk-(?:proj-|svcacct-)?[A-Za-z0-9_\-]{32,255}"  # OpenAI keys without the old marker
    r"|hf_[A-Za-z0-9]{30,64}"                       # Hugging Face
    r"|npm_[A-Za-z0-9]{36}"                         # npm token outside .npmrc
    r")(?![A-Za-z0-9_\-])"
)
_TOKEN_HINTS = ("github_pat_", "AIza", "sk-", "hf_", "npm_")
# Keys named in a connection string or URL: the name is kept, the value replaced (Azure Service
# Bus / Event Hubs `SharedAccessKey=`, SAS tokens' `sig=`, URL-encoded base64).
_NAMED_KEY = re.compile(r"(?:\bSharedAccessKey=|[?&]sig=)([A-Za-z0-9+/%]{16,512}=*)")
_NAMED_KEY_HINT = re.compile(r"SharedAccessKey=|sig=")
# `auth_token = "..."`: the keyword plugin knows password/secret/api_key names but not token or
# auth ones. Only a quoted value that looks random is replaced; found value-first (a quoted string
# after `=` or `:`), then the name is checked in the text just before it.
_QUOTED_VALUE = re.compile(r"""[:=]{1,2}[ \t]*(["'])([A-Za-z0-9+/_\-=.~]{16,256})\1""")
_TOKEN_NAME = re.compile(r"""(?i)(?:token|auth|credential)\w*["']?[ \t]*$""")
_NAME_WINDOW = 64
# HTTP authorization header values: the scheme is kept, the credential replaced.
_AUTH_HEADER = re.compile(r"(?i)\b(?:bearer|basic|token)[ \t]+([A-Za-z0-9_\-+/.~]{8,1024}=*)")
_AUTH_HINT = re.compile(r"(?i)authoriz|bearer")
# PEM key blocks: the header, then to the END marker when what lies between is key text (base64,
# line breaks real or escaped, the quotes and `+` of a string split over lines, `Name: value`
# headers) with a base64 run in it; without one, over the escaped lines of base64 that follow the
# header, then over the real lines that look like PEM.
_KEY_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9]+ ){0,3}PRIVATE KEY( BLOCK)?-----")
_KEY_END = re.compile(r"-----END ([A-Z0-9]+ ){0,3}PRIVATE KEY( BLOCK)?-----")
_KEY_BODY = re.compile(r"[A-Za-z0-9+/=\s\\\"'`,:.\-]*")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16}")
_ESCAPED_LINES = re.compile(r"(?:(?:\\r)?\\n[A-Za-z0-9+/=]+)+")
_MAX_KEY_CHARS = 1 << 16  # an 8192-bit RSA key in PEM is about 6.5 KB
_PEM_LINE = re.compile(r"[ \t\"']*(?:[A-Za-z0-9+/=]{8,}|[A-Za-z0-9+/]{1,8}={1,2}"
                       r"|[A-Z][a-z]*(?:-[A-Za-z]+)+: [^\n]{1,200})[ \t\"',\\n]*")
_PUTTY_BEGIN = re.compile(r"PuTTY-User-Key-File-\d+:")
_PUTTY_LINE = re.compile(r"[A-Za-z\-]{1,40}:[^\n]{0,200}|[A-Za-z0-9+/=]{4,}")
_MAX_KEY_LINES = 400
# Emails are found from the "@domain" part, then extended left over the local part.
_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
# Four dotted numbers; the boundaries (no word character or dot around) are checked by hand.
_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV4_HINT = re.compile(r"\.[0-9]{1,3}\.[0-9]{1,3}\.")  # starts with a literal: a fast scan
# Domains reserved for documentation (RFC 2606) are not personal data.
_EXAMPLE_HOST = re.compile(r"(?i)(?:^|\.)(?:example(?:\.(?:com|org|net))?|localhost|test|invalid)$")
# `scheme://user:password@host`: each match starts at the literal "://", every part bounded.
_URL_USERINFO = re.compile(r"://([^\s:/@\"'`<>]{0,128}):([^\s/@\"'`<>]{1,256})@([A-Za-z0-9.\-\[\]:]{1,255})")
_HOST_AFTER = re.compile(r"@([A-Za-z0-9.\-]{1,255})")
_AWS_EXAMPLE = "EXAMPLE"


def _public_ip(text: str) -> bool:
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return ip.is_global


def _looks_random(value: str) -> bool:
    """Letters and digits mixed, at least 3.5 bits of entropy per character."""
    has_alpha = any(c.isalpha() for c in value)
    has_digit = any(c.isdigit() for c in value)
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return has_alpha and has_digit and entropy >= 3.5


def _windows(line: str, size: int = WINDOW) -> Iterator[tuple[int, str]]:
    """(offset, piece) covering `line` in pieces of at most `size` characters, overlapping by a fifth."""
    if len(line) <= size:
        yield 0, line
        return
    step = size - size // 5
    for start in range(0, len(line), step):
        yield start, line[start:start + size]
        if start + size >= len(line):
            break


def _kept(value: str, line: str, plugin) -> bool:
    """True for a finding the library's filters (or the placeholder rules) say is not a secret."""
    uuid_ok = type(plugin).__name__ != "NpmDetector"  # a legacy npm token is a UUID
    return (heuristic.is_sequential_string(value) or (uuid_ok and heuristic.is_potential_uuid(value))
            or heuristic.is_likely_id_string(value, line, plugin) or heuristic.is_templated_secret(value)
            or heuristic.is_prefixed_with_dollar_sign(value) or heuristic.is_not_alphanumeric_string(value)
            or _AWS_EXAMPLE in value or bool(_PLACEHOLDER_VALUE.fullmatch(value)))


def _extend(line: str, start: int, end: int) -> int:
    while end < len(line) and line[end] in _TOKEN_CHARS:
        end += 1
    return end


def _line_at(piece: str, pos: int) -> str:
    start = piece.rfind("\n", 0, pos) + 1
    end = piece.find("\n", pos)
    return piece[start:end if end >= 0 else len(piece)]


def _findings(plugin, filename: str, piece: str) -> Iterator[tuple[int, int]]:
    """(start, end) in `piece` of each value `plugin` finds there and the filters keep; the
    filters that look at the line (`*_id` names; indirect references, for an unquoted keyword
    value only) see the finding's line."""
    name = type(plugin).__name__
    view = _cut_words(piece) if name == "KeywordDetector" and _LONG_WORD.search(piece) else piece
    for found in plugin.analyze_line(filename=filename, line=view, line_number=0):
        value = found.secret_value or ""
        if not value or (name == "KeywordDetector" and len(value) < _MIN_KEYWORD_VALUE):
            continue
        pos = view.find(value)
        while pos >= 0:
            line = _line_at(view, pos)
            host = _HOST_AFTER.match(view, pos + len(value))
            reference = (name == "KeywordDetector" and (pos == 0 or view[pos - 1] not in "\"'")
                         and heuristic.is_indirect_reference(line))
            if not (_kept(value, line, plugin) or reference
                    or (name == "BasicAuthDetector" and host and _EXAMPLE_HOST.search(host.group(1)))):
                yield pos, pos + len(value)
            pos = view.find(value, pos + len(value))


def _cut_words(piece: str) -> str:
    """`piece` with a space in place of every `_MAX_WORD`-th character of a run of word characters
    (same length, so positions map one to one)."""
    return _LONG_WORD.sub(lambda m: m.group(0)[:-1] + " ", piece)


def _pieces(text: str, size: int, whole_lines: bool) -> Iterator[tuple[int, str]]:
    """(offset, piece) covering `text`: one line at a time (`whole_lines` False), or as many
    consecutive lines as fit in `size` characters; a line longer than `size` in overlapping windows."""
    chunk = pos = 0
    while pos < len(text):
        nl = text.find("\n", pos)
        end = len(text) if nl < 0 else nl + 1
        if end - pos > size or not whole_lines:
            if chunk < pos:
                yield chunk, text[chunk:pos]
            for off, piece in _windows(text[pos:end].rstrip("\r\n"), size):
                yield pos + off, piece
            chunk = end
        elif end - chunk > size:
            yield chunk, text[chunk:pos]
            chunk = pos
        pos = end
    if chunk < len(text):
        yield chunk, text[chunk:]


def _gated_lines(text: str, gate: re.Pattern, size: int) -> Iterator[tuple[int, str]]:
    """(offset, piece) of each line that `gate` matches in, once, in windows of `size`."""
    pos = 0
    while (m := gate.search(text, pos)) is not None:
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.end())
        end = len(text) if end < 0 else end
        for off, piece in _windows(text[start:end].rstrip("\r"), size):
            yield start + off, piece
        pos = end + 1


def _library_spans(text: str, path: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, kind) of every detect-secrets finding. The keyword plugin sees one line at a
    time (its values, `[^\\v'"]*`, would run on over line ends); the others, whose patterns stop at
    a line end, see as many whole lines at once as fit in `WINDOW` (far fewer calls)."""
    ext = os.path.splitext(path)[1].lower()
    filename = path or "x"
    for plugin in _PLUGINS:
        name = type(plugin).__name__
        gate = _GATES.get(name)
        if gate is not None and not gate.search(text):
            continue
        kind = "private_key" if name in _KEY_PLUGINS else "secret"
        fname = _KEYWORD_FILETYPE.get(ext, filename) if name == "KeywordDetector" else filename
        size = _SMALL_WINDOWS.get(name, WINDOW)
        pieces = _gated_lines(text, gate, size) if name == "KeywordDetector" else _pieces(text, size, True)
        for base, piece in pieces:
            if gate is not None and not gate.search(piece) or not piece.strip():
                continue
            for start, end in _findings(plugin, fname, piece):
                if kind == "secret":
                    end = _extend(piece, start, end)
                yield base + start, base + end, kind


def _key_blocks(text: str) -> Iterator[tuple[int, int, str]]:
    """PEM private keys (see `_pem_end`) and PuTTY key files (header to `Private-MAC:`, or over the
    `Name: value` and base64 lines). Linear: each header looks for its END only up to the next
    header (at most `_MAX_KEY_CHARS` on), so no stretch of text is read twice."""
    begins = list(_KEY_BEGIN.finditer(text))
    pos = 0
    for i, m in enumerate(begins):
        if m.start() < pos:
            continue
        limit = min(begins[i + 1].start() if i + 1 < len(begins) else len(text), m.end() + _MAX_KEY_CHARS)
        pos = _pem_end(text, m.end(), limit)
        yield m.start(), pos, "private_key"
    pos = 0
    while (m := _PUTTY_BEGIN.search(text, pos)) is not None:
        end = text.find("\n", m.end())
        end = _rows(text, len(text) if end < 0 else end, _PUTTY_LINE, "Private-MAC:")
        yield m.start(), end, "private_key"
        pos = end


def _pem_end(text: str, start: int, limit: int) -> int:
    """Where the key whose header ends at `start` ends: at its END marker (before `limit`) when the
    text between is key text with a base64 run in it, whatever joins its lines (real line breaks,
    `\\n` escapes, a string's quotes and `+`); else after the escaped lines of base64 that follow
    the header, then over the real lines that look like PEM."""
    end = _KEY_END.search(text, start, limit)
    if end is not None and _KEY_BODY.fullmatch(text, start, end.start()) \
            and _BASE64_RUN.search(text, start, end.start()):
        return end.end()
    escaped = _ESCAPED_LINES.match(text, start, limit)
    return _rows(text, escaped.end() if escaped else start, _PEM_LINE, None)


def _rows(text: str, end: int, line_re: re.Pattern, stop: str | None) -> int:
    """The end of the block that reaches `end`, extended over the following real lines
    that `line_re` matches (at most `_MAX_KEY_LINES`, up to a row starting with `stop`)."""
    for _ in range(_MAX_KEY_LINES):
        if end >= len(text) or text[end] != "\n":
            break
        nxt = text.find("\n", end + 1)
        nxt = len(text) if nxt < 0 else nxt
        row = text[end + 1:nxt]
        if not row.strip() or not line_re.fullmatch(row):
            break
        end = nxt
        if stop is not None and row.startswith(stop):
            break
    return end


def _url_passwords(text: str) -> Iterator[tuple[int, int, str]]:
    if "://" not in text:
        return
    for m in _URL_USERINFO.finditer(text):
        password, host = m.group(2), m.group(3).split(":", 1)[0].rstrip(".")
        if _EXAMPLE_HOST.search(host) or _kept(password, "", None):
            continue
        yield m.start(2), m.end(2), "secret"


def _own_tokens(text: str) -> Iterator[tuple[int, int, str]]:
    if any(hint in text for hint in _TOKEN_HINTS):
        for m in _TOKENS.finditer(text):
            yield m.start(), m.end(), "secret"
    for m in _QUOTED_VALUE.finditer(text):
        value = m.group(2)
        if (_TOKEN_NAME.search(text, max(0, m.start() - _NAME_WINDOW), m.start())
                and _looks_random(value) and not _kept(value, "", None)):
            yield m.start(2), m.end(2), "secret"
    if _NAMED_KEY_HINT.search(text):
        for m in _NAMED_KEY.finditer(text):
            if not _kept(m.group(1), "", None):
                yield m.start(1), m.end(1), "secret"
    if _AUTH_HINT.search(text):
        for m in _AUTH_HEADER.finditer(text):
            if not _kept(m.group(1), "", None):
                yield m.start(1), m.end(1), "secret"


def _emails(text: str) -> Iterator[tuple[int, int, str]]:
    for m in _EMAIL_DOMAIN.finditer(text):
        start = m.start()
        while start > 0 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        if start < m.start() and not _EXAMPLE_HOST.search(m.group(0)[1:]):
            yield start, m.end(), "email"


def _public_ips(text: str) -> Iterator[tuple[int, int, str]]:
    if not _IPV4_HINT.search(text):
        return
    for m in _IPV4.finditer(text):
        before = text[m.start() - 1] if m.start() else " "
        after = text[m.end()] if m.end() < len(text) else " "
        octets = m.group(0).split(".")
        if (before.isalnum() or before in "._" or after.isalnum() or after in "._"
                or sum(len(o) > 1 for o in octets) < 3 or not _public_ip(m.group(0))):
            continue
        yield m.start(), m.end(), "ip_address"


def _merge(spans: Iterable[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Overlapping spans joined into one (a private key wins over a secret inside it)."""
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(spans):
        if merged and start < merged[-1][1]:
            s, e, k = merged[-1]
            merged[-1] = (s, max(e, end), "private_key" if "private_key" in (k, kind) else k)
        else:
            merged.append((start, end, kind))
    return merged


def _splice(text: str, spans: list[tuple[int, int, str]], counts: Counter) -> str:
    out, pos = [], 0
    for start, end, kind in spans:
        out += (text[pos:start], PLACEHOLDERS[kind])
        pos = end
        counts[kind] += 1
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str, path: str = "") -> tuple[str, Counter]:
    """`text` with secrets and personal data replaced, and the count of replacements per kind.

    `path` (the file's name) tells detect-secrets' keyword plugin the file type. Rules:
    - [private_key] a PEM private key, BEGIN to END (or, with no END line, over the PEM lines that
      follow), and a PuTTY key file, become <PRIVATE_KEY>;
    - [secret] every detect-secrets finding (module docstring), extended over the token's
      characters; a token of a shape the library lacks (`_TOKENS`); a quoted value that looks
      random (letters and digits, >= 3.5 bits/char) assigned to a token/auth name; the credential of an HTTP
      `Authorization: Bearer|Basic|Token` value; the password of `scheme://user:password@host`,
      keeping user and host: each becomes <SECRET>;
    - [email] an email address becomes <EMAIL>, except at example.com/org/net, localhost, .test;
    - [ip_address] a public IPv4 address becomes <IP_ADDRESS>; private, loopback, reserved and
      documentation ranges (127.0.0.1, 10.x, 192.168.x, 0.0.0.0, 203.0.113.x) are kept, they
      identify no one, and so are dotted numbers with fewer than three multi-digit parts, which
      are versions and section numbers far more often than hosts (7.1.4.34, 8.2.4.44; 8.8.8.8);
    - kept: RFC 2606 hosts, AWS's `...EXAMPLE...` keys, templates (`${VAR}`, `<password>`) and
      placeholders (`changeme`, `your_password_here`, `xxxx`).
    Secrets are replaced before e-mails are looked for, so `user:pass@host` never reads as an address.
    """
    counts: Counter = Counter()
    spans = list(_key_blocks(text)) if ("PRIVATE KEY" in text or "PuTTY-User-Key-File" in text) else []
    spans += _library_spans(text, path)
    spans += _url_passwords(text)
    spans += _own_tokens(text)
    text = _splice(text, _merge(spans), counts)
    if "@" in text:
        text = _splice(text, list(_emails(text)), counts)
    text = _splice(text, list(_public_ips(text)), counts)
    return text, counts


def redact(records: Iterable[Record], config: DataConfig) -> Iterator[Record]:
    """Replace secrets and personal data in each kept file (stage 5); rules in `redact_text`.

    Sets `redactions` ({kind: count}) on records that had any. A no-op when `config.redact` is off.
    """
    for record in records:
        if "removed" in record or not config.redact:
            yield record
            continue
        text, counts = redact_text(record["text"], record.get("path", ""))
        if counts:
            record = {**record, "text": text, "redactions": dict(counts)}
        yield record
