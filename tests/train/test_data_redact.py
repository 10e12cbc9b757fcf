"""Redaction: planted secrets and personal data become placeholders; ordinary code does not."""
from train.data.config import DataConfig
from train.data.redact import redact, redact_text

PLANTED = '''AUTHOR = "Jane Doe <jane.doe@gmail.com>"
AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
GITHUB = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
api_key = "a8F3kL9qZ2xW7vB4nM1pR6tY"
settings = {"auth_token": "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5"}
SERVER = "93.184.216.34"
KEY = """-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAz3x8
-----END RSA PRIVATE KEY-----"""
'''
BENIGN = '''HOST = "127.0.0.1"; LAN = "192.168.1.20"; DOC = "203.0.113.7"
VERSION = "7.1.4.34"  # section 8.2.4.44
password = "your_password_here"
token = "aaaaaaaaaaaaaaaaaaaaaaa"
contact = "someone@example.com"
@decorator.attribute
def f(): pass
'''


def test_planted_secrets_and_personal_data_are_replaced():
    text, counts = redact_text(PLANTED)
    for secret in ["jane.doe@gmail.com", "AKIAIOSFODNN7EXAMPLE", "ghp_aBcDeF", "a8F3kL9qZ2",
                   "Zm9vYmFy", "93.184.216.34", "MIIEowIBAAKCAQEAz3x8"]:
        assert secret not in text
    assert 'AUTHOR = "Jane Doe <<EMAIL>>"' in text
    assert 'api_key = "<SECRET>"' in text
    assert '{"auth_token": "<SECRET>"}' in text
    assert 'SERVER = "<IP_ADDRESS>"' in text
    assert 'KEY = """<PRIVATE_KEY>"""' in text
    assert dict(counts) == {"email": 1, "secret": 4, "ip_address": 1, "private_key": 1}


def test_benign_code_is_untouched():
    text, counts = redact_text(BENIGN)
    assert text == BENIGN and not counts


def test_stage_records_counts_and_can_be_disabled():
    rec = {"text": PLANTED, "bytes": len(PLANTED), "language": "python"}
    (out,) = redact([rec], DataConfig())
    assert out["redactions"]["email"] == 1 and "<EMAIL>" in out["text"]
    (same,) = redact([rec], DataConfig(redact=False))
    assert same["text"] == PLANTED and "redactions" not in same
