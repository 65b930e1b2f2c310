"""The benchmark: its prompt set, prompt files, how figures are averaged, and a real run."""

from __future__ import annotations

import json
import math

import pytest

from specchat.bench.measure import Measurement
from specchat.bench.prompts import BUILTIN, PromptFileError, load_prompts, select
from specchat.bench.report import build_report, geometric_mean, summarize
from specchat.bench.runner import PromptResult
from specchat.bench.prompts import BenchPrompt

SPEC_BENCH_KINDS = {"multi_turn", "translation", "summarization", "qa", "math", "rag"}


def test_builtin_set_covers_spec_bench_kinds_with_four_prompts_each():
    by_category: dict[str, list[BenchPrompt]] = {}
    for p in BUILTIN:
        by_category.setdefault(p.category, []).append(p)
    assert SPEC_BENCH_KINDS <= set(by_category)
    assert all(len(ps) >= 4 for ps in by_category.values())
    assert all(len(p.turns) >= 2 for p in by_category["multi_turn"])
    assert len({p.id for p in BUILTIN}) == len(BUILTIN)
    assert all(t.strip() for p in BUILTIN for t in p.turns)


def test_prompt_files_and_their_errors(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"category": "qa", "prompt": "Why?"}\n\n{"category": "chat", "turns": ["a", "b"], "id": "x"}\n')
    prompts = load_prompts(good)
    assert [(p.category, p.turns, p.id) for p in prompts] == [("qa", ("Why?",), "p-1"), ("chat", ("a", "b"), "x")]
    for text, fragment in [
        ('{"category": "qa"}', "exactly one of"),
        ('{"prompt": "hi"}', "category"),
        ('{"category": "qa", "prompt": "a", "turns": ["b"]}', "exactly one of"),
        ('{"category": "qa", "turns": []}', "non-empty"),
        ('{"category": "qa", "prompt": "ok"}\nnot json', ":2: not JSON"),
        ("", "holds no prompts"),
    ]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(PromptFileError, match=fragment.replace("(", r"\(")):
            load_prompts(bad)


def test_select_by_category_and_limit():
    chosen = select(list(BUILTIN), categories=["qa", "math"], limit=2)
    assert [p.category for p in chosen] == ["qa", "qa", "math", "math"]


def _m(tokens: int, seconds: float, rounds: int = 1, drafted: int = 0, accepted: int = 0,
       positions: tuple[list[int], list[int]] = ([], []), text: str = "x",
       draft_s: float = 0.0, verify_s: float = 0.0) -> Measurement:
    return Measurement(tokens=tokens, elapsed_s=seconds, rounds=rounds, drafted=drafted, accepted=accepted,
                       position_drafted=positions[0], position_accepted=positions[1], texts=[text],
                       draft_s=draft_s, verify_s=verify_s)


def test_speedup_is_the_geometric_mean_of_per_prompt_ratios():
    # prompt a: 2x faster with speculation; prompt b: 2x slower -> they cancel out
    a = PromptResult(BenchPrompt("c", ("a",)), baseline=_m(10, 1.0),
                     spec=_m(10, 0.5, 4, 8, 6, ([4, 4], [4, 2]), draft_s=0.1, verify_s=0.3))
    b = PromptResult(BenchPrompt("c", ("b",)), baseline=_m(30, 1.0),
                     spec=_m(30, 2.0, 10, 10, 5, ([10], [5]), "y", draft_s=0.6, verify_s=1.2))
    a.spec.unverified, b.spec.unverified = 3, 2  # drafts the k auto rule made and did not verify
    s = summarize([a, b], greedy=True)
    assert s["unverified_drafts"] == 5 and s["drafted"] == 18  # and not in the acceptance rate
    # a round: all decoding time over all rounds, and its parts; a plain step likewise per token
    assert s["round_ms"] == pytest.approx(2500 / 14)
    assert s["round_drafting_ms"] == pytest.approx(700 / 14) and s["round_verifying_ms"] == pytest.approx(1500 / 14)
    assert s["baseline_step_ms"] == pytest.approx(2000 / 40)
    assert s["speedup"] == pytest.approx(1.0)
    assert s["baseline_tokens_per_s"] == pytest.approx(40 / 2.0)  # total tokens / total time
    assert s["spec_tokens_per_s"] == pytest.approx(40 / 2.5)
    assert s["acceptance_rate"] == pytest.approx(11 / 18)
    assert s["mean_tokens_per_round"] == pytest.approx(40 / 14)
    assert s["per_position_acceptance"] == pytest.approx([9 / 14, 2 / 4])
    assert s["identical_answers"] == 1  # b's speculative text differs from its baseline
    assert geometric_mean([4.0, 1.0]) == pytest.approx(2.0) and geometric_mean([]) is None
    assert math.isclose(geometric_mean([0.0, 3.0]), 3.0)  # a prompt without tokens is left out


def test_report_has_the_documented_keys():
    r = PromptResult(BenchPrompt("qa", ("q",)), baseline=_m(10, 1.0), spec=_m(10, 0.5, 3, 6, 4),
                     peers={"hf_generate": _m(10, 2.0)})
    report = build_report([r], {"temperature": 0.0}, {"hf_generate": "transformers generate()"})
    assert report["peers"]["hf_generate"]["speedup_vs_baseline"] == pytest.approx(0.5)
    assert report["peers"]["hf_generate"]["spec_speedup_over_peer"] == pytest.approx(4.0)
    assert "speedup" in report["settings"]["averaging"]


@pytest.mark.slow
def test_bench_json_on_a_two_prompt_file_has_every_field(cli, shared_model, tmp_path):
    prompts = tmp_path / "two.jsonl"
    prompts.write_text(json.dumps({"category": "qa", "prompt": "Name a primary colour."}) + "\n"
                       + json.dumps({"category": "chat", "turns": ["Say hi.", "Say bye."]}) + "\n")
    # ngram, so that transformers has an assisted-generation twin to compare with
    result = cli("bench", "--prompts", str(prompts), "--drafter", "ngram", "--max-new-tokens", "3",
                 "--peers", "hf", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"overall", "categories", "peers", "settings", "first_turn", "step_profile"}
    # Where a plain step goes, profiled on the engine's own path.
    step = report["step_profile"]
    assert step["weights_ms"] > 0 and step["attention_ms"] > 0 and step["step_ms"] > 0
    assert step["weights_ms"] + step["attention_ms"] + step["rest_ms"] >= step["step_ms"] * 0.99
    # The first turn of each prompt (one per category by default) in fresh `specchat run`
    # processes, speculation off and on: the user's one-shot path.
    first = report["first_turn"]
    assert set(first["categories"]) == {"qa", "chat"} and first["overall"]["prompts"] == 2
    for figures in (first["overall"], *first["categories"].values()):
        assert figures["baseline_tokens_per_s"] > 0 and figures["spec_tokens_per_s"] > 0
        assert figures["speedup"] > 0 and figures["process_s"] > 0
        assert figures["identical_answers"] == figures["prompts"]
    overall_keys = {"speedup", "baseline_tokens_per_s", "spec_tokens_per_s", "acceptance_rate",
                    "mean_tokens_per_round"}
    assert overall_keys <= set(report["overall"])
    assert set(report["categories"]) == {"qa", "chat"}
    for figures in (report["overall"], *report["categories"].values()):
        assert overall_keys <= set(figures) and "per_position_acceptance" in figures
        assert figures["baseline_tokens_per_s"] > 0 and figures["spec_tokens_per_s"] > 0 and figures["speedup"] > 0
        assert figures["identical_answers"] == figures["prompts"]  # greedy speculation is lossless
        parts = figures["round_drafting_ms"] + figures["round_verifying_ms"]
        assert 0 < figures["round_verifying_ms"] and parts <= figures["round_ms"] and figures["baseline_step_ms"] > 0
    assert report["overall"]["prompts"] == 2
    assert set(report["peers"]) == {"hf_generate", "hf_assisted"}
    for peer in report["peers"].values():
        assert peer["tokens_per_s"] > 0 and set(peer["categories"]) == {"qa", "chat"}
    settings = report["settings"]
    assert settings["drafter"] == "ngram" and settings["temperature"] == 0.0 and settings["max_new_tokens"] == 3
    assert settings["n_prompts"] == 2 and settings["prompts"] == str(prompts)
    assert settings["warmup_plain_step_ms"] > 0 and set(settings["warmup_verify_ms"]) >= {"1", "9"}


def test_table_shows_categories_overall_peers_and_how_speedup_is_averaged():
    import io

    from rich.console import Console

    from specchat.bench.report import render

    results = [PromptResult(BenchPrompt(c, ("q",)), baseline=_m(10, 1.0),
                            spec=_m(10, 0.5, 3, 6, 4, ([3, 3], [3, 1]), draft_s=0.15, verify_s=0.3),
                            peers={"hf_assisted": _m(10, 0.8)}) for c in ("qa", "math")]
    results[0].spec.unverified = 2
    settings = {"target": "T", "drafter": "ngram", "device": "cpu", "k": "auto", "temperature": 0.0}
    out = io.StringIO()
    render(build_report(results, settings, {"hf_assisted": "transformers prompt lookup (10)"}), Console(file=out, width=160))
    text = out.getvalue()
    for fragment in ("qa", "math", "overall", "2.00×", "67%", "100% 33%", "transformers prompt lookup (10)",
                     "1.25×", "1.60×", "geometric mean over prompts", "identical to the baseline's: 2/2",
                     "a round took 166.7 ms (drafting 50.0, verifying 100.0, the rest 16.7); a plain step 100.0 ms",
                     "drafts left unverified by the k auto rule (it was unsure of them): 2, beside 12 verified"):
        assert fragment in text, fragment


def test_table_written_to_a_file_is_not_squeezed_to_80_columns():
    import io

    from specchat.bench.report import render, table_console

    spec = _m(10, 0.5, 3, 6, 4, ([3, 3, 3, 3, 3, 3], [2, 2, 2, 2, 1, 1]))
    results = [PromptResult(BenchPrompt("multi_turn", ("q",)), baseline=_m(10, 1.0), spec=spec)]
    out = io.StringIO()  # what `specchat bench > file` writes to: not a terminal
    render(build_report(results, {"target": "T", "drafter": "smoldraft", "device": "cpu", "k": "auto"}, {}),
           table_console(out))
    lines = out.getvalue().splitlines()
    header = next(line for line in lines if "category" in line)
    assert all(h in header for h in ("baseline tok/s", "specchat tok/s", "per-position acceptance"))
    assert any("67% 67% 67% 67% 33% 33%" in line for line in lines)  # one line, not wrapped
