"""Options: camelCase settings onto fields; bad values fall back to defaults with a message."""
import pytest

from lsp.options import DEFAULTS, ServerOptions, update_options


def test_settings_apply_and_only_change_what_they_name():
    opts, problems = update_options(ServerOptions(max_tokens=10), {"temperature": 1, "cacheMb": 0})
    assert problems == []
    assert (opts.max_tokens, opts.temperature, opts.cache_mb) == (10, 1.0, 0.0)


def test_an_infill_section_is_unwrapped():
    opts, problems = update_options(DEFAULTS, {"infill": {"maxTokens": 7, "typeHints": False}})
    assert problems == [] and opts.max_tokens == 7 and opts.type_hints is False


@pytest.mark.parametrize("key,value,field", [
    ("maxTokens", 0, "max_tokens"), ("maxTokens", "12", "max_tokens"), ("maxTokens", True, "max_tokens"),
    ("temperature", -1, "temperature"), ("device", "tpu", "device"), ("cacheMb", -5, "cache_mb"),
    ("completion", "yes", "completion"), ("typeConfidence", 1.5, "type_confidence"), ("model", "", "model"),
    ("nameSuggestions", 0, "name_suggestions"), ("variableNames", 1, "variable_names"),
    ("context", "on", "context"), ("contextTokens", -1, "context_tokens"), ("contextTokens", 1.5, "context_tokens"),
    ("contextSources", ["open", "web"], "context_sources"), ("contextSources", "open", "context_sources"),
    ("contextFileKb", 0, "context_file_kb"),
])
def test_a_bad_value_falls_back_to_its_default(key, value, field):
    opts, problems = update_options(ServerOptions(max_tokens=10, temperature=0.5), {key: value, "timeBudgetMs": 500})
    assert getattr(opts, field) == getattr(DEFAULTS, field)
    assert opts.time_budget_ms == 500  # the good value next to it still applies
    assert len(problems) == 1 and key in problems[0] and "default" in problems[0]


def test_context_settings_apply():
    opts, problems = update_options(DEFAULTS, {"context": False, "contextTokens": 256,
                                               "contextSources": ["imports", "definitions", "imports"],
                                               "contextFileKb": 64})
    assert problems == []
    assert (opts.context, opts.context_tokens, opts.context_sources, opts.context_file_kb) == \
        (False, 256, ("imports", "definitions"), 64)
    assert update_options(DEFAULTS, {"contextSources": []})[0].context_sources == ()


def test_unknown_keys_and_non_objects_are_reported_not_fatal():
    opts, problems = update_options(DEFAULTS, {"maxTokenz": 3})
    assert opts == DEFAULTS and "maxTokenz" in problems[0]
    opts, problems = update_options(DEFAULTS, [1, 2])
    assert opts == DEFAULTS and problems
    assert update_options(DEFAULTS, None) == (DEFAULTS, [])


def test_the_dataclass_itself_rejects_bad_values():
    with pytest.raises(ValueError, match="maxTokens"):
        ServerOptions(max_tokens=-1)
