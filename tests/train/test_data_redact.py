"""Redaction: secrets and personal data become placeholders; placeholders and ordinary code do not.

`PROBES` is a table of 39 realistic leaks (name, file name, text, what must not survive), one per kind
of secret the curation must catch. `python tests/train/test_data_redact.py` prints, for each probe,
whether it was found and whether it was fully redacted (the figures in docs/data.md); with
`PYTHONPATH=OTHER_TREE` it prints them for another version of `train.data.redact`.
"""
import inspect
import sys
import time

import pytest

from train.data import redact as R
from train.data.config import DataConfig
from train.data.redact import redact, redact_text

PROBES = [
    ('aws_akia', 'settings.py',
     'AWS_ACCESS_KEY_ID = "AKIA2E0A8F3B244C9986"\n',
     ['AKIA2E0A8F3B244C9986']),
    ('aws_asia', 'settings.py',
     'aws_session_key_id: ASIAY34FZKBOKMUTVV7A\n',
     ['ASIAY34FZKBOKMUTVV7A']),
    ('aws_secret_export', 'deploy.sh',
     'export AWS_SECRET_ACCESS_KEY=Xq8rT2kLm9Wv4Zp7Nc3Hb6Jf1Gd5Sy0Ea8Ru2Io4\n',
     ['Xq8rT2kLm9Wv4Zp7Nc3Hb6Jf1Gd5Sy0Ea8Ru2Io4']),
    ('github_pat', 'settings.py',
     'GITHUB = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"\n',
     ['ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789']),
    ('gitlab_pat', 'settings.py',
     'GITLAB_TOKEN=glpat-x9Kf2LmQ7vR3tW8zYb1N\n',
     ['glpat-x9Kf2LmQ7vR3tW8zYb1N']),
    ('npmrc', '.npmrc',
     '//registry.npmjs.org/:_authToken=npm_k3J9fL2mQ8xR4tV7wZ1bN6cH0yU5sE3aP9dG\n',
     ['npm_k3J9fL2mQ8xR4tV7wZ1bN6cH0yU5sE3aP9dG']),
    ('npm_env', 'ci.sh',
     'NPM_TOKEN=npm_Wq7Er3Ty9Ui1Op5As8Df2Gh6Jk4Lz0Xc7Vb3\n',
     ['npm_Wq7Er3Ty9Ui1Op5As8Df2Gh6Jk4Lz0Xc7Vb3']),
    ('slack_webhook', 'settings.py',
     'WEBHOOK = "https://hooks.slack.com/services/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"\n',
     ['q8W2e4R6t8Y0u2I4o6P8a0S2']),
    ('slack_bot', 'settings.py',
     'SLACK = "xoxb-2048-4096-Kf93Ls02Mq85Zt17Xw"\n',
     ['xoxb-2048-4096-Kf93Ls02Mq85Zt17Xw']),
    ('stripe', 'settings.py',
     'stripe.api_key = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"\n',
     ['sk_live_4eC39HqLyjWDarjtT1zdp7dc']),
    ('jwt', 'settings.py',
     'TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"\n',
     ['dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U']),
    ('rsa_key', 'settings.py',
     'KEY = """-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAz3x8Qm2VtL9k\nbW5s7RpYq4Lx0cHd2fA==\n-----END RSA PRIVATE KEY-----"""\n',
     ['MIIEowIBAAKCAQEAz3x8Qm2VtL9k', 'bW5s7RpYq4Lx0cHd2fA==']),
    ('key_no_end', 'id_ed25519',
     '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\nAAAAMwAAAAtzc2gtZWQyNTUxOQAAACBk3M2x\n',
     ['b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ', 'AAAAMwAAAAtzc2gtZWQyNTUxOQAAACBk3M2x']),
    ('putty', 'deploy.ppk',
     'PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nComment: deploy\nPublic-Lines: 1\nAAAAB3NzaC1yc2EAAAABJQAAAQEAk8\nPrivate-Lines: 1\nAAABAQCu3cMN9qlVz7Jp0Xr4kT8Wy2\nPrivate-MAC: 9d1f3c6b2a8e4f7d0c5b1a9e8f7d6c5b4a3e2f1d\n',
     ['AAABAQCu3cMN9qlVz7Jp0Xr4kT8Wy2', '9d1f3c6b2a8e4f7d0c5b1a9e8f7d6c5b4a3e2f1d']),
    ('bearer', 'settings.py',
     'headers = {"Authorization": "Bearer 7fK2pQ9xLm4Rt8Vw1Zb6Nc3H"}\n',
     ['7fK2pQ9xLm4Rt8Vw1Zb6Nc3H']),
    ('basic', 'api.sh',
     "curl -H 'Authorization: Basic YWRtaW46czNjcjN0UGFzcw==' https://api.acme.io/v1\n",
     ['YWRtaW46czNjcjN0UGFzcw==']),
    ('password_short', 'settings.py',
     'password = "Tr0ub4dor&3"\n',
     ['Tr0ub4dor&3']),
    ('password_letters', 'settings.py',
     'DB_PASSWORD = "correcthorsebatterystaple"\n',
     ['correcthorsebatterystaple']),
    ('api_key_quoted', 'settings.py',
     'api_key = "a8F3kL9qZ2xW7vB4nM1pR6tY"\n',
     ['a8F3kL9qZ2xW7vB4nM1pR6tY']),
    ('mysql_url', 'settings.py',
     'DATABASE_URL = "mysql://root:hunter2@10.1.2.3:3306/app"\n',
     ['hunter2']),
    ('postgres_url', 'settings.py',
     "engine = create_engine('postgres://admin:S3cr3t!Pass@db.internal.acme.com/prod')\n",
     ['S3cr3t!Pass', 'S3cr3t']),
    ('email', 'settings.py',
     'AUTHOR = "Jane Doe <jane.doe@gmail.com>"\n',
     ['jane.doe@gmail.com']),
    ('public_ip', 'settings.py',
     'SERVER = "93.184.216.34"\n',
     ['93.184.216.34']),
    ('pypi_token', '.pypirc',
     'password = pypi-AgEIcHlwaS5vcmcCJGI4YjNlZjA5LTQ0YjctNGE5Ny1iZjg0LTk0ZjJlYzYzZDZhMwACJXsicGVybWlzc2lvbnMiOiAidXNlciIsICJ2ZXJzaW9uIjogMX0AAAYgSMqA\n',
     ['pypi-AgEIcHlwaS5vcmcCJGI4YjNlZjA5LTQ0YjctNGE5Ny1iZjg0']),
    ('sendgrid', 'settings.py',
     'SENDGRID_API_KEY = "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"\n',
     ['TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr']),
    ('azure_storage', 'settings.py',
     'CONN = "DefaultEndpointsProtocol=https;AccountName=acmedata;AccountKey=Zk3pQ9xLm4Rt8Vw1Zb6Nc3HfY7uJ2sK5dG0aE8rT1yU4iO6pL9qW3eR5tY7uI0oP2aS4dF6gH8jK0lZ1xC3vB5n==;EndpointSuffix=core.windows.net"\n',
     ['Zk3pQ9xLm4Rt8Vw1Zb6Nc3HfY7uJ2sK5dG0aE8rT1yU4iO6pL9qW3eR5tY7uI0oP2aS4dF6gH8jK0lZ1xC3vB5n==']),
    # Review 2: a key written with `\n` escapes (a Python/JS string, a GCP service-account JSON) kept
    # its body; a secret passed to a call was dropped by the indirect-reference filter; three shapes
    # no rule knew (Service Bus keys, SAS signatures, legacy UUID npm tokens).
    ('key_escaped_py', 'keys.py',
     'KEY = "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNb\\n-----END PRIVATE KEY-----\\n"\n',
     ['MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7', 'VJTUt9Us8cKjMzEfYyjiWA4R4']),
    ('gcp_service_account', 'service-account.json',
     '{\n  "type": "service_account",\n  "private_key_id": "4f1a2b3c",\n  "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNb\\n-----END PRIVATE KEY-----\\n",\n  "client_id": "1"\n}\n',
     ['MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7', 'VJTUt9Us8cKjMzEfYyjiWA4R4']),
    ('key_escaped_js', 'key.js',
     "const key = '-----BEGIN RSA PRIVATE KEY-----\\n' +\n  'MIIEowIBAAKCAQEAz3x8Qm2VtL9kbW5s7RpYq4Lx0cHd2fA\\n' +\n  'Qm2VtL9kbW5s7RpYq4Lx0cHd2fAz3x8Qm2VtL9kbW5s7Rp==\\n' +\n  '-----END RSA PRIVATE KEY-----';\n",
     ['MIIEowIBAAKCAQEAz3x8Qm2VtL9kbW5s7RpYq4Lx0cHd2fA', 'Qm2VtL9kbW5s7RpYq4Lx0cHd2fAz3x8Qm2VtL9kbW5s7Rp==']),
    ('boto3_call', 's3.py',
     's3 = boto3.client("s3", aws_access_key_id="AKIA2E0A8F3B244C9986", aws_secret_access_key="Xq8rT2kLm9Wv4Zp7Nc3Hb6Jf1Gd5Sy0Ea8Ru2Io4")\n',
     ['AKIA2E0A8F3B244C9986', 'Xq8rT2kLm9Wv4Zp7Nc3Hb6Jf1Gd5Sy0Ea8Ru2Io4']),
    ('github_call', 'gh.py',
     'g = Github("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789")\n',
     ['ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789']),
    ('stripe_call', 'pay.py',
     'client = StripeClient("sk_live_4eC39HqLyjWDarjtT1zdp7dc")\n',
     ['sk_live_4eC39HqLyjWDarjtT1zdp7dc']),
    ('sendgrid_call', 'mail.py',
     'sg = SendGridAPIClient("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")\n',
     ['TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr']),
    ('password_call', 'db.py',
     'conn = psycopg2.connect(host="db", user="app", password="Tr0ub4dor&3x")\n',
     ['Tr0ub4dor&3x']),
    ('twilio_call', 'sms.py',
     'client = Client("AC8f3a9d2e7b1c4f6a0e9d8c7b6a5f4e3d", "9f8e7d6c5b4a39281706f5e4d3c2b1a0")\n',
     ['AC8f3a9d2e7b1c4f6a0e9d8c7b6a5f4e3d']),
    ('jwt_call', 'auth.py',
     'claims = jwt.decode("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", key)\n',
     ['dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U']),
    ('azure_service_bus', 'bus.py',
     'CONN = "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=Zk3pQ9xLm4Rt8Vw1Zb6Nc3HfY7uJ2sK5dG0aE8rT1yU="\n',
     ['Zk3pQ9xLm4Rt8Vw1Zb6Nc3HfY7uJ2sK5dG0aE8rT1yU=']),
    ('azure_sas', 'blob.py',
     'URL = "https://acme.blob.core.windows.net/backups/db.bak?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-01-01T00:00:00Z&sig=Xq8rT2kLm9Wv4Zp7Nc3Hb6Jf1Gd5Sy0Ea8Ru2Io4%3D"\n',
     ['Xq8rT2kLm9Wv4Zp7Nc3Hb6Jf1Gd5Sy0Ea8Ru2Io4']),
    ('npm_legacy_uuid', '.npmrc',
     '//registry.npmjs.org/:_authToken=8d2f6a1c-3b4e-4f7a-9c0d-1e2f3a4b5c6d\n',
     ['8d2f6a1c-3b4e-4f7a-9c0d-1e2f3a4b5c6d']),
]

BENIGN = '''HOST = "127.0.0.1"; LAN = "192.168.1.20"; DOC = "203.0.113.7"
VERSION = "7.1.4.34"  # section 8.2.4.44
password = "your_password_here"
token = "aaaaaaaaaaaaaaaaaaaaaaa"
contact = "someone@example.com"
AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DSN = "postgres://user:password@localhost/app"
MIRROR = "https://deploy:s3cr3tPa55@mirror.example.org/simple"
password = get_password()
secret = "${DB_SECRET}"
config = {'MODULE_PWD_STATE': 'yes'}
@decorator.attribute
def f(): pass
'''


@pytest.mark.parametrize("name, path, text, secrets", PROBES, ids=[p[0] for p in PROBES])
def test_probe_is_found_and_fully_redacted(name, path, text, secrets):
    out, counts = redact_text(text, path)
    assert sum(counts.values()) >= 1, f"{name}: not found"
    for secret in secrets:
        assert secret not in out, f"{name}: {secret!r} survived in {out!r}"
    assert any(p in out for p in R.PLACEHOLDERS.values())


def test_probe_table_covers_39_kinds():
    assert len(PROBES) == 39 and len({p[0] for p in PROBES}) == 39


def test_url_passwords_keep_user_and_host():
    out, _ = redact_text("a = 'postgres://admin:S3cr3t!Pass@db.internal.acme.com/prod'\n"
                         "b = 'mysql://root:hunter2@10.1.2.3:3306/app'\n", "db.py")
    assert out == ("a = 'postgres://admin:<SECRET>@db.internal.acme.com/prod'\n"
                   "b = 'mysql://root:<SECRET>@10.1.2.3:3306/app'\n")


def test_private_key_without_end_line_stops_at_the_key():
    text = 'KEY = """-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n"""\nx = 1\n'
    out, counts = redact_text(text, "k.py")
    assert out == 'KEY = """<PRIVATE_KEY>\n"""\nx = 1\n' and counts == {"private_key": 1}


def test_keys_with_escaped_line_breaks_are_one_block_begin_to_end():
    """A PEM key inside a string, its lines joined by `\n` escapes (and, in JS, by `' +` and real
    line breaks), is one <PRIVATE_KEY> from BEGIN to END: none of its body is left, none of the code
    around it is taken."""
    py = next(p[2] for p in PROBES if p[0] == "key_escaped_py")
    js = next(p[2] for p in PROBES if p[0] == "key_escaped_js")
    gcp = next(p[2] for p in PROBES if p[0] == "gcp_service_account")
    assert redact_text(py, "k.py") == ('KEY = "<PRIVATE_KEY>\\n"\n', {"private_key": 1})
    assert redact_text(js, "k.js") == ("const key = '<PRIVATE_KEY>';\n", {"private_key": 1})
    out, counts = redact_text(gcp, "sa.json")
    assert '"private_key": "<PRIVATE_KEY>\\n",\n  "client_id": "1"\n}' in out and counts == {"private_key": 1}
    # no END: the escaped lines that follow the header, and nothing after the closing quote
    out, counts = redact_text('k = "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEF\\nAASC"\n', "k.py")
    assert out == 'k = "<PRIVATE_KEY>"\n' and counts == {"private_key": 1}


def test_code_that_handles_keys_keeps_its_code():
    """Between a BEGIN and an END marker that are code, not a key (no base64 run, or parentheses),
    nothing but the header is taken, as before escaped keys were joined."""
    for text in ('BEGIN = "-----BEGIN RSA PRIVATE KEY-----"\nEND = "-----END RSA PRIVATE KEY-----"\n',
                 'if line.startswith("-----BEGIN PRIVATE KEY-----"):\n    body = []\n'
                 'elif line.startswith("-----END PRIVATE KEY-----"):\n    done = True\n',
                 'pem = "-----BEGIN PRIVATE KEY-----\\n" + b64encode(der).decode() + "\\n-----END PRIVATE KEY-----\\n"\n'):
        out, counts = redact_text(text, "pem.py")
        assert counts == {"private_key": 1} and out.count("-----END") == 1, out
        assert out.replace("<PRIVATE_KEY>", "") == text.replace(text[text.index("-----BEGIN"):text.index("KEY-----") + 8], "")


def test_references_and_variables_are_not_secrets():
    """A name bound to a call, a lookup or a variable is not a secret (the indirect-reference filter
    now looks at unquoted keyword values only; a literal passed to a call is redacted)."""
    for line in ('password = get_password()', "secret = request.headers['apikey']",
                 'api_key = os.environ["API_KEY"]', 'db.connect(password=config["db_password"])',
                 'secret_key = secrets.token_hex(32)', 'pwd = getpass.getpass("Password: ")',
                 'password: str = Field(..., min_length=8)', 'PASSWORD=$DB_PASSWORD', 'export API_KEY="${API_KEY:-}"'):
        for path in ("x.py", "x.sh", "x.yaml"):
            assert redact_text(line + "\n", path) == (line + "\n", {}), (path, line)


def test_benign_code_and_documented_placeholders_are_untouched():
    text, counts = redact_text(BENIGN, "settings.py")
    assert text == BENIGN and not counts


def test_stage_records_counts_and_can_be_disabled():
    text = "".join(p[2] for p in PROBES if p[1] == "settings.py")
    rec = {"text": text, "bytes": len(text), "language": "python", "path": "settings.py"}
    (out,) = redact([rec], DataConfig())
    assert out["redactions"]["email"] == 1 and "<EMAIL>" in out["text"]
    assert out["redactions"]["secret"] >= 10 and out["redactions"]["private_key"] == 1
    (same,) = redact([rec], DataConfig(redact=False))
    assert same["text"] == text and "redactions" not in same


# Every rule is linear: each gets 1 MB made of pieces that make backtracking patterns slow (a key
# with no END line, runs of slashes, of keywords, of token prefixes, of quotes...). 1 MB takes
# seconds on one core; a quadratic rule (the old private-key pattern: 19 s for 0.22 MB) takes
# minutes, so the limit is generous for a loaded machine and still fails such a rule.
MB = 1 << 20
LIMIT_S = 60.0  # CPU seconds
_PIECES = [
    "-----BEGIN RSA PRIVATE KEY-----\n" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY\n" * 8,
    "-----BEGIN PRIVATE KEY-----\n", "PuTTY-User-Key-File-2: ssh-rsa\nComment: x\n",
    "://a:b", "x://u:p@", "a@b.c", "a.", "1.22.33.", "sk-", "hf_a", "Bearer ", 'auth_token="',
    "token = '0123456789abcdefgh", "=   ", "/", "//a/:_authToken=", "/" * 1990 + "/:_authToken=",
    "password = ", "password", "password_" + "a" * 3000 + " ", "'\"", "aB3+", "a1f", "eyJa.",
    "aws key ", "https://hooks.slack.com/services/T", "glpat-", "a: ", "x=\"y\" password: 'z' ",
    '"-----BEGIN PRIVATE KEY-----\\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldY\\n', "-----END PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----\\n" + "QUJD\\n' +\n '" * 50, "SharedAccessKey=", "&sig=a", "x = f(",
]


def _adversarial() -> str:
    """1 MB: equal runs of each piece, so each rule meets each piece on long lines and short ones."""
    run = MB // len(_PIECES)
    return "".join((p * (run // len(p) + 1))[:run] for p in _PIECES).ljust(MB, "x")


# getattr: the module also runs as a script against an older tree (see the module docstring)
OWN_RULES = {name: getattr(R, f"_{name}", None) for name in ("key_blocks", "url_passwords", "own_tokens",
                                                             "emails", "public_ips")}


@pytest.mark.parametrize("rule", list(OWN_RULES) + list(getattr(R, "PLUGINS", ())))
def test_every_rule_is_linear_on_1mb_of_adversarial_input(rule, monkeypatch):
    text = _adversarial()
    assert len(text) == MB
    if rule in OWN_RULES:
        run = lambda: list(OWN_RULES[rule](text))  # noqa: E731
    else:
        monkeypatch.setattr(R, "_PLUGINS", [p for p in R._PLUGINS if type(p).__name__ == rule])
        run = lambda: list(R._library_spans(text, "x.py"))  # noqa: E731
    t0 = time.process_time()  # CPU time of this process: a busy machine does not inflate it
    run()
    assert time.process_time() - t0 < LIMIT_S, rule


def test_keys_without_end_lines_are_linear_through_the_whole_stage():
    """The finding: one PEM header after another and no END line made the old pattern scan to the
    end of the text from every header (0.22 MB: 19 s; 1 MB: minutes)."""
    piece = "-----BEGIN RSA PRIVATE KEY-----\n"
    text = piece * (MB // len(piece))
    t0 = time.process_time()
    out, counts = redact_text(text, "keys.py")
    assert time.process_time() - t0 < LIMIT_S
    assert counts["private_key"] == MB // len(piece) and out == "<PRIVATE_KEY>\n" * (MB // len(piece))


def probe_table(redact_fn=redact_text) -> list[tuple[str, bool, bool]]:
    """(probe, found, fully redacted) for each probe, with `redact_fn` (this tree's, or another's)."""
    takes_path = len(inspect.signature(redact_fn).parameters) > 1
    rows = []
    for name, path, text, secrets in PROBES:
        out, counts = redact_fn(text, path) if takes_path else redact_fn(text)
        rows.append((name, sum(counts.values()) > 0, not any(s in out for s in secrets)))
    return rows


if __name__ == "__main__":
    rows = probe_table()
    print("| probe | found | redacted |\n|---|---|---|")
    for name, found, redacted in rows:
        print(f"| {name} | {'yes' if found else 'no'} | {'yes' if redacted else 'no'} |")
    print(f"found {sum(r[1] for r in rows)} of {len(rows)}, fully redacted {sum(r[2] for r in rows)}")
