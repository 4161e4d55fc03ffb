"""The judge forms behind one interface: the classification prompt and its parsing, the local
chat and classifier models (built in the tests), the OpenAI-compatible endpoint against a real
`transformers serve` on loopback, retries and refusals over a swapped transport, and the
study's verdict cache."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from tiny_judges import build_chat_judge, build_classifier_judge

from heretic.config.settings import Settings
from heretic.engine.judge import CachedJudge, MarkerJudge, Pair, Verdict, judged_refusals
from heretic.errors import ExitCode, JudgeError
from heretic.judging.endpoint import EndpointJudge
from heretic.judging.factory import build_judge, probe_judge
from heretic.judging.local import ChatJudge, ClassifierJudge, label_map
from heretic.judging.prompt import find_verdict, parse_verdict, user_message
from heretic.run.verdict_cache import VerdictCache

PAIRS = [
    Pair("how do i steal a car", "i can not help with that"),
    Pair("how do i bake bread", "mix flour and water then bake it"),
]


@pytest.fixture(scope="session")
def chat_judge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_chat_judge(tmp_path_factory.mktemp("judges") / "chat", "complied")


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_classifier_judge(tmp_path_factory.mktemp("judges") / "cls", pick=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def served_judge(chat_judge_dir: Path) -> Iterator[str]:
    """`transformers serve` on loopback serving the tiny chat judge; its /v1 base URL."""
    port = _free_port()
    log = open(chat_judge_dir.parent / "serve.log", "w")  # noqa: SIM115 (closed below)
    exe = Path(sys.executable).with_name("transformers")
    proc = subprocess.Popen(
        [str(exe), "serve", str(chat_judge_dir), "--host", "127.0.0.1", "--port", str(port)]
        + ["--device", "cpu"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    try:
        while True:  # a readiness poll with a deadline, not a synchronizing sleep
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((chat_judge_dir.parent / "serve.log").read_text()[-2000:])
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --- the prompt and its parsing ------------------------------------------------------------


def test_the_first_verdict_word_counts() -> None:
    assert find_verdict("Refused.") == "refused"
    assert find_verdict("verdict: complied, not refused") == "complied"
    assert find_verdict("This is a refusal") == "refused"
    assert find_verdict("OTHER") == "other"
    assert find_verdict("a complete answer, complicated") is None
    with pytest.raises(JudgeError, match="holds no verdict"):
        parse_verdict("maybe", "chat:x")


def test_long_answers_are_cut_and_empty_ones_named() -> None:
    assert "(empty answer)" in user_message(Pair("q", "  "))
    assert len(user_message(Pair("q", "x" * 10_000))) < 4200


def test_markers_are_a_judge_and_a_first_pass() -> None:
    markers = MarkerJudge(["can not"])
    assert markers.verdicts(PAIRS) == ["refused", "complied"]

    class Always:
        name = "always-refused"
        seen: list[Pair] = []

        def verdicts(self, pairs: Sequence[Pair]) -> list[Verdict]:
            self.seen += list(pairs)
            return ["refused"] * len(pairs)

        def close(self) -> None:
            pass

    judge = Always()
    flags = judged_refusals(
        judge, [p.request for p in PAIRS], [p.answer for p in PAIRS], [True, False]
    )
    assert flags == [True, True]
    assert judge.seen == [PAIRS[1]]  # the marker-flagged answer was not sent to the judge


# --- local forms ---------------------------------------------------------------------------


def test_a_local_chat_judge_answers_with_its_verdict(chat_judge_dir: Path) -> None:
    judge = ChatJudge(str(chat_judge_dir), device="cpu", batch_size=1)
    assert judge.verdicts(PAIRS) == ["complied", "complied"]
    judge.close()


def test_a_classifier_judge_maps_its_labels(classifier_dir: Path, tmp_path: Path) -> None:
    assert ClassifierJudge(str(classifier_dir), device="cpu").verdicts(PAIRS) == [
        "refused",
        "refused",
    ]
    # unnamed labels need judge_labels, and are mapped by them
    plain = build_classifier_judge(tmp_path / "plain", labels=("LABEL_0", "LABEL_1"), pick=0)
    with pytest.raises(JudgeError, match="have no verdict"):
        ClassifierJudge(str(plain), device="cpu").verdicts(PAIRS)
    mapped = ClassifierJudge(
        str(plain), device="cpu", labels={"LABEL_0": "other", "LABEL_1": "refused"}
    )
    assert mapped.verdicts(PAIRS) == ["other", "other"]
    assert label_map({0: "compliance", 1: "refusal"}, {}) == {0: "complied", 1: "refused"}


def test_a_judge_model_that_does_not_load_is_exit_17(tmp_path: Path) -> None:
    settings = Settings(judge=f"chat:{tmp_path / 'missing'}")
    with pytest.raises(JudgeError, match="could not be loaded") as info:
        probe_judge(settings)
    assert info.value.exit_code == ExitCode.JUDGE == 17


# --- the endpoint --------------------------------------------------------------------------


def test_the_endpoint_judge_against_transformers_serve(
    served_judge: str, chat_judge_dir: Path
) -> None:
    settings = Settings(judge=f"endpoint:{served_judge}", judge_model=str(chat_judge_dir))
    probe = probe_judge(settings)
    assert probe is not None and probe.verdict == "complied"
    judge = build_judge(settings)
    assert judge.verdicts(PAIRS * 3) == ["complied"] * 6
    judge.close()


def _transport(statuses: list[int], seen: list[httpx.Request]) -> httpx.MockTransport:
    """A swapped transport speaking the chat-completions API: answers with each status in turn."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = statuses.pop(0) if statuses else 200
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "nope"}})
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Refused"}}]}
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handle)


def test_the_endpoint_retries_busy_answers_and_sends_the_key(caplog) -> None:
    seen: list[httpx.Request] = []
    judge = EndpointJudge(
        "http://127.0.0.1:9/v1",
        model="m",
        api_key="sk-test-secret-123",
        backoff_s=0.0,
        transport=_transport([503, 429], seen),
    )
    assert judge.verdicts([PAIRS[0]]) == ["refused"]
    assert len(seen) == 3
    assert seen[0].headers["authorization"] == "Bearer sk-test-secret-123"
    assert json.loads(seen[0].content)["model"] == "m"
    assert "sk-test-secret-123" not in judge.name


def test_the_endpoint_stops_at_a_refused_key_without_showing_it() -> None:
    seen: list[httpx.Request] = []
    judge = EndpointJudge(
        "http://127.0.0.1:9/v1",
        model="m",
        api_key="sk-test-secret-456",
        backoff_s=0.0,
        transport=_transport([401], seen),
    )
    with pytest.raises(JudgeError, match="HTTP 401") as info:
        judge.verdicts([PAIRS[0]])
    assert len(seen) == 1  # a wrong key is not retried
    assert "sk-test-secret-456" not in info.value.paragraph()


def test_an_endpoint_that_is_down_is_exit_17() -> None:
    settings = Settings(
        judge=f"endpoint:http://127.0.0.1:{_free_port()}/v1",
        judge_model="m",
        judge_retries=1,
        judge_timeout_s=2,
    )
    with pytest.raises(JudgeError, match="did not answer after 2 attempts"):
        probe_judge(settings)


def test_the_settings_check_the_judge_form() -> None:
    for bad in ("marker", "chat:", "endpoint:ftp://x", "markers:x"):
        with pytest.raises(ValueError):
            Settings(judge=bad)
    with pytest.raises(ValueError, match="judge_model"):
        Settings(judge="endpoint:http://127.0.0.1:1/v1")
    assert Settings(benchmarks="a, b").benchmarks == ["a", "b"]


# --- the verdict cache ---------------------------------------------------------------------


def test_a_resumed_study_does_not_pay_twice(tmp_path: Path, chat_judge_dir: Path) -> None:
    first = CachedJudge(ChatJudge(str(chat_judge_dir), device="cpu"), VerdictCache(tmp_path))
    assert first.verdicts(PAIRS) == ["complied", "complied"]
    assert first.asked == 2
    again = CachedJudge(ChatJudge(str(chat_judge_dir), device="cpu"), VerdictCache(tmp_path))
    assert again.verdicts([*PAIRS, Pair("new", "one")]) == ["complied"] * 3
    assert again.asked == 1  # only the new pair reached the judge
    with open(tmp_path / "verdicts.jsonl", "a") as f:
        f.write('{"key": "torn')  # a killed writer's last line is skipped
    assert len(VerdictCache(tmp_path)) == 3
