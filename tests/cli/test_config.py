"""Settings: defaults < config file < SPECCHAT_* < command line, every value checked."""

from __future__ import annotations

import pytest

from specchat.config import ConfigError, config_path, default_drafter, resolve


def test_built_in_defaults_and_default_drafter():
    config = resolve({})
    assert config.target == "embedded"
    assert config.drafter == default_drafter("embedded") == "smoldraft"
    assert config.k is None and config.k_label == "auto"
    assert config.temperature == 0.0 and config.device == "auto" and config.quant is None


def test_config_file_then_env_then_command_line(config_file, monkeypatch):
    config_file('temperature = 0.7\ntop_k = 20\nk = 3\nsystem = "Be brief."\n')
    config = resolve({})
    assert (config.temperature, config.top_k, config.k, config.system) == (0.7, 20, 3, "Be brief.")

    monkeypatch.setenv("SPECCHAT_TEMPERATURE", "0.2")
    monkeypatch.setenv("SPECCHAT_K", "auto")
    config = resolve({})
    assert (config.temperature, config.top_k, config.k) == (0.2, 20, None)

    config = resolve({"temperature": 0.0, "k": "5", "top_k": None})
    assert (config.temperature, config.top_k, config.k) == (0.0, 20, 5)


def test_explicit_drafter_wins_and_other_targets_get_the_fallback(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    assert resolve({"drafter": "none"}).drafter == "none"
    monkeypatch.setenv("SPECCHAT_DRAFTER", "some/model")
    assert resolve({}).drafter == "some/model"
    monkeypatch.delenv("SPECCHAT_DRAFTER")
    uncached = resolve({"target": "HuggingFaceTB/SmolLM2-360M-Instruct"})
    assert uncached.drafter == "ngram" and "not in the local Hugging Face cache" in uncached.drafter_note


@pytest.mark.parametrize("key, value, fragment", [
    ("k", "-1", "draft length"),
    ("k", "many", "auto"),
    ("temperature", "-0.5", ">= 0"),
    ("top_p", "0", "(0, 1]"),
    ("repetition_penalty", "0", "> 0 (1 = off)"),
    ("max_new_tokens", "0", ">= 1"),
    ("device", "tpu", "auto, cuda, cpu"),
    ("quant", "3bit", "4bit, 8bit, int4, int4-q8head, q4_1, fp16, none"),
])
def test_bad_environment_values_name_the_variable(monkeypatch, key, value, fragment):
    monkeypatch.setenv(f"SPECCHAT_{key.upper()}", value)
    with pytest.raises(ConfigError) as e:
        resolve({})
    assert f"SPECCHAT_{key.upper()}" in str(e.value) and fragment in str(e.value)


def test_config_file_errors_name_the_file(config_file):
    path = config_file("temprature = 0.5\n")
    with pytest.raises(ConfigError, match="unknown setting 'temprature'") as e:
        resolve({})
    assert str(path) in str(e.value)
    config_file("k = [1, 2]\n")
    with pytest.raises(ConfigError, match="config file"):
        resolve({})
    config_file("this is not toml")
    with pytest.raises(ConfigError, match="config file"):
        resolve({})


def test_config_path_follows_the_user_config_dir_and_can_be_overridden(user_dirs, tmp_path):
    assert config_path() == user_dirs / "config.toml"
    assert config_path({"SPECCHAT_CONFIG": str(tmp_path / "x.toml")}) == tmp_path / "x.toml"


def test_cli_only_keys_ignore_file_and_environment(config_file, monkeypatch):
    config_file("max_new_tokens = 900\n")
    monkeypatch.setenv("SPECCHAT_TEMPERATURE", "0.9")
    monkeypatch.setenv("SPECCHAT_DEVICE", "cpu")
    defaults = {"temperature": 0.0, "max_new_tokens": 128}
    only = frozenset({"temperature", "max_new_tokens"})
    config = resolve({}, defaults=defaults, cli_only=only)
    assert (config.temperature, config.max_new_tokens, config.device) == (0.0, 128, "cpu")
    assert resolve({"max_new_tokens": 7}, defaults=defaults, cli_only=only).max_new_tokens == 7


# --- through the command line: usage errors are exit 2 and one line, before any model loads ---


def _one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("specchat: error: ")
    return lines[0]


@pytest.mark.parametrize("args, fragment", [
    (["run", "--k", "abc", "hi"], "--k"),
    (["run", "--temperature", "warm", "hi"], "--temperature"),
    (["run", "--repetition-penalty", "-1", "hi"], "--repetition-penalty (command line): must be > 0"),
    (["run", "--color", "sometimes", "hi"], "--color"),
    (["run", "--device", "tpu", "hi"], "--device"),
    (["bench", "--limit", "0"], "--limit"),
    (["bench", "--category", "poetry"], "unknown category 'poetry'"),
    (["nonsense"], "No such command"),
    (["run", "--trace", "/no/such/dir/t.jsonl", "hi"], "no such directory"),
])
def test_bad_options_exit_2_with_one_line(cli, args, fragment):
    result = cli(*args)
    assert result.exit_code == 2
    assert fragment in _one_line_error(result)
    assert result.stdout == ""


def test_bad_environment_and_config_file_exit_2(cli, config_file, monkeypatch):
    monkeypatch.setenv("SPECCHAT_TOP_P", "2")
    result = cli("run", "hi")
    assert result.exit_code == 2 and "SPECCHAT_TOP_P" in _one_line_error(result)
    monkeypatch.delenv("SPECCHAT_TOP_P")
    config_file("colour = 'red'\n")
    result = cli("run", "hi")
    assert result.exit_code == 2 and "config.toml" in _one_line_error(result)


def test_empty_stdin_without_prompt_is_a_usage_error(cli):
    result = cli("run", input="  \n")
    assert result.exit_code == 2
    assert "nothing to answer" in _one_line_error(result)


def test_unknown_theme_is_a_usage_error(cli, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("")
    result = cli("replay", "--theme", "no-such-theme", str(trace))
    assert result.exit_code == 2 and "unknown theme 'no-such-theme'" in _one_line_error(result)


def test_help_lists_every_command(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("run", "bench", "models", "replay"):
        assert command in result.stdout
