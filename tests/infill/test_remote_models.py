"""Remote models (issue 28): one parser decides where code goes, and one list says which names are remote.

`http://127.0.0.1\\@evil.example/` is 127.0.0.1 to the extension's URL parser (WHATWG: `\\` is `/`) and
evil.example to the server's (everything before `@` is a user name): the extension did not ask, and
the server connected to evil.example. Now the server refuses a backslash or a user name in a model URL
in one line, and the extension asks about such a URL (vscode-ext/test/settings.test.ts)."""
import json
from pathlib import Path

import pytest

from infill.engines import load_engine
from infill.engines.load import REMOTE_PREFIXES, engine_kind
from infill.engines.remote import server_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1\\@evil.example/", "backslash"),
    ("http://127.0.0.1\\\\evil.example/v1", "backslash"),
    ("http://me@127.0.0.1:8000/v1", "user name"),
    ("http://me:secret@127.0.0.1:8000/v1", "user name"),
    ("http://127.0.0.1@evil.example/v1", "user name"),
])
def test_model_urls_that_parsers_read_differently_are_refused(url, why):
    with pytest.raises(ValueError, match=why) as err:
        load_engine("openai:" + url)
    assert "\n" not in str(err.value)


def test_the_host_the_server_checks_is_the_host_it_connects_to():
    engine = load_engine("openai:http://127.0.0.1:8000/v1")
    assert engine.http._client.base_url.host == server_url(engine.url).host == "127.0.0.1"


def test_the_server_and_the_extension_read_one_list_of_remote_prefixes():
    canonical = json.loads((ROOT / "infill/engines/remote.json").read_text())
    assert (ROOT / "vscode-ext/src/remote.json").read_text() == (ROOT / "infill/engines/remote.json").read_text()
    assert REMOTE_PREFIXES == tuple(canonical["prefixes"]) == ("openai:",)
    assert all(engine_kind(prefix + "http://127.0.0.1:1/") == "openai" for prefix in REMOTE_PREFIXES)
    settings = (ROOT / "vscode-ext/src/settings.ts").read_text()
    assert 'import remote from "./remote.json"' in settings and '"openai:"' not in settings
