"""`specchat run` on the embedded model, in-process (one shared model) and as a real
process behind pipes, the way a user or a script runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from specchat.engine.loop.events import Round, TurnEnd, TurnStart, event_from_json

from .conftest import REPO, specchat

PROMPT = "List three colours of the rainbow."
N = "8"  # tokens per answer: enough to span several rounds, cheap on a shared CPU


@pytest.mark.slow
def test_streamed_text_equals_json_text_and_trace(cli, shared_model, tmp_path):
    trace = tmp_path / "run.jsonl"
    streamed = cli("run", "--max-new-tokens", N, "--trace", str(trace), PROMPT)
    assert streamed.exit_code == 0, streamed.stderr
    as_json = cli("run", "--max-new-tokens", N, "--json", PROMPT)
    assert as_json.exit_code == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["text"] and streamed.stdout == result["text"]  # greedy: same answer both ways
    assert result["target"] == shared_model.name and result["drafter"] == "smoldraft" and result["device"] == "cpu"
    assert result["finish_reason"] in ("eos", "length")
    stats = result["stats"]
    assert 0 < stats["tokens"] <= int(N) and stats["rounds"] >= 1 and stats["tokens_per_s"] > 0

    events = [event_from_json(line) for line in trace.read_text(encoding="utf-8").splitlines()]
    assert isinstance(events[0], TurnStart) and events[0].user_text == PROMPT
    assert isinstance(events[-1], TurnEnd) and events[-1].text == streamed.stdout
    assert "".join(e.text for e in events if isinstance(e, Round)) == streamed.stdout
    assert "\x1b" not in streamed.stdout


@pytest.mark.slow
def test_stdin_is_context_and_the_argument_the_instruction(cli, shared_model, tmp_path):
    trace = tmp_path / "t.jsonl"
    # invalid UTF-8 on stdin is replaced, not fatal
    result = cli("run", "--max-new-tokens", "2", "--stats", "--trace", str(trace), "Summarize.",
                 input=b"Cats sleep a lot.\xff\xfe\n")
    assert result.exit_code == 0, result.stderr
    start = event_from_json(trace.read_text(encoding="utf-8").splitlines()[0])
    assert start.user_text == "Cats sleep a lot.\ufffd\ufffd\n\nSummarize."
    assert len(result.stderr.strip().splitlines()) == 1 and "tok/s" in result.stderr


@pytest.mark.slow
def test_missing_model_is_exit_1_with_one_line(cli, tmp_path):
    result = cli("run", "--target", str(tmp_path / "no-such-model"), "hi")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("specchat: error: ")
    assert "no-such-model" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_text_longer_than_the_context_is_exit_1_with_one_line(cli, shared_model):
    result = cli("run", "--max-new-tokens", "2", "--json", "Summarize.", input=("word " * 9000).encode())
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("specchat: error: the message is too long: the prompt is 90")
    assert "context holds 8192" in result.stderr
    assert json.loads(result.stdout)["finish_reason"] == "error"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_exit_1(cli):
    result = cli("run", "--device", "cuda", "hi")
    assert result.exit_code == 1 and "CUDA" in result.stderr and "Traceback" not in result.stderr


def test_debug_adds_the_traceback(cli, tmp_path):
    result = cli("run", "--debug", "--target", str(tmp_path / "nothing.gguf"), "hi")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and result.stderr.rstrip().splitlines()[-1].startswith("specchat: error:")


# --- real processes behind pipes -------------------------------------------------------------


@pytest.mark.slow
def test_piped_run_prints_plain_text_equal_to_the_trace(tmp_path):
    trace = tmp_path / "pipe.jsonl"
    shell = f"echo '{PROMPT}' | {sys.executable} -m specchat run --max-new-tokens {N} --trace {trace}"
    proc = subprocess.run(shell, shell=True, capture_output=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode("utf-8")
    assert out and "\x1b" not in out and proc.stderr == b""  # nothing on stderr unless asked
    end = event_from_json(trace.read_text(encoding="utf-8").splitlines()[-1])
    assert out == end.text


@pytest.mark.slow
def test_ctrl_c_keeps_the_partial_answer_and_exits_130(tmp_path):
    trace = tmp_path / "interrupted.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "specchat", "run", "--max-new-tokens", "400",
                             "--trace", str(trace), "Write a long story about a dragon."],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            # A job started in the background (`.ci/run &`) inherits SIGINT
                            # ignored; a user's terminal delivers it, so the child gets that.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and '"type": "round"' not in (trace.read_text() if trace.exists() else ""):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    end = event_from_json(trace.read_text(encoding="utf-8").splitlines()[-1])
    assert end.finish_reason == "cancelled" and end.totals.tokens < 400
    assert out.decode("utf-8") == end.text  # what was printed stays, and is the kept answer


def test_usage_errors_and_help_through_python_m():
    assert specchat("--help").returncode == 0
    proc = specchat("run", "--k", "-3", "hi")
    assert proc.returncode == 2
    assert proc.stderr.decode().count("\n") == 1 and proc.stdout == b""
    proc = specchat("run", input=b"")
    assert proc.returncode == 2 and b"nothing to answer" in proc.stderr


@pytest.mark.slow
def test_bare_specchat_with_piped_stdin_is_one_shot_with_env_settings(cli, shared_model, monkeypatch):
    monkeypatch.setenv("SPECCHAT_MAX_NEW_TOKENS", "3")
    monkeypatch.setenv("SPECCHAT_DRAFTER", "none")
    result = cli("--help")
    assert result.exit_code == 0
    as_json = cli("run", "--json", input="Say hello.")
    streamed = cli(input="Say hello.")  # `specchat` alone is `specchat run`
    assert streamed.exit_code == 0, streamed.stderr
    result = json.loads(as_json.stdout)
    assert result["drafter"] == "none" and result["stats"]["tokens"] <= 3 and result["stats"]["drafted"] == 0
    assert streamed.stdout == result["text"]


def test_the_default_cpu_path_runs_the_measured_format_and_answers_as_plain_decoding():
    """The user's one-shot path end to end, in fresh processes: the weight format
    measured at first load (or remembered), and the default drafter's answer equal to
    plain decoding's in that format."""
    def run(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "specchat", "run", "--json", "--max-new-tokens", "24",
                               *args, PROMPT], stdin=subprocess.DEVNULL, capture_output=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stderr.decode()
        return json.loads(proc.stdout)

    speculative = run()
    assert speculative["drafter"] == "smoldraft" and speculative["weights"] in ("int4", "int4-q8head", "q4_1", "fp16")
    plain = run("--drafter", "none", "--quant", speculative["weights"])
    assert plain["weights"] == speculative["weights"] and plain["text"] == speculative["text"]
