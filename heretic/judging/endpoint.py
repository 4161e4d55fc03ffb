"""A judge behind an OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's server,
Ollama, `transformers serve`, a hosted API).

The key comes from an environment variable (`judge_api_key_env`) and is registered as a secret,
so no log line, message or file shows it; a server on this machine usually needs none. Each
request has a timeout; a connection error, a timeout, 429 or a 5xx is retried with a growing
pause, up to `retries` times; 401/403 and other 4xx are errors at once (retrying cannot fix a
wrong key or model name). Pairs are sent a few at a time, in parallel (`concurrency`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from heretic.engine.judge import Pair, Verdict
from heretic.errors import JudgeError
from heretic.judging.prompt import messages, parse_verdict
from heretic.secrets import add_secret, mask_url_password

_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EndpointJudge:
    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        concurrency: int = 4,
        max_tokens: int = 8,
        backoff_s: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        # the name goes into report.json and the cache keys: never a URL's password
        self.name = f"endpoint:{mask_url_password(base_url.rstrip('/'))}#{model}"
        self.retries = retries
        self.concurrency = max(1, concurrency)
        self.max_tokens = max_tokens
        self.backoff_s = backoff_s
        add_secret(api_key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers, transport=transport)

    def _body(self, pair: Pair) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": messages(pair),
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": False,
        }

    def reply(self, pair: Pair) -> str:
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))  # a busy server gets room
            try:
                response = self._client.post(self.url, json=self._body(pair))
            except httpx.TransportError as exc:  # refused, reset, timed out
                why = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in _RETRY_STATUS:
                why = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise self._refused(response)
            return _content(response.json(), self.name)
        raise JudgeError(
            f"The judge endpoint {self.url} did not answer after {self.retries + 1} attempts "
            f"(last: {why}).",
            "Check that the server runs and serves the model (judge_model), or raise "
            "judge_timeout_s / judge_retries for a slow one.",
        )

    def _refused(self, response: httpx.Response) -> JudgeError:
        detail = " ".join(response.text.split())[:200]
        hint = (
            "Set the key in the variable judge_api_key_env names (HERETIC_JUDGE_API_KEY by "
            "default); it is never logged."
            if response.status_code in (401, 403)
            else "Check judge_model (the name the server knows the model by) and the URL "
            "(the server's OpenAI-compatible base, usually ending in /v1)."
        )
        return JudgeError(
            f"The judge endpoint {self.url} refused the request: HTTP {response.status_code} "
            f"{detail}",
            hint,
        )

    def verdicts(self, pairs: Sequence[Pair]) -> list[Verdict]:
        if len(pairs) <= 1 or self.concurrency == 1:
            replies = [self.reply(p) for p in pairs]
        else:
            with ThreadPoolExecutor(self.concurrency) as pool:
                replies = list(pool.map(self.reply, pairs))
        return [parse_verdict(r, self.name) for r in replies]

    def close(self) -> None:
        self._client.close()


def _content(data: Mapping[str, Any], name: str) -> str:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise JudgeError(
            f"The judge endpoint {name} answered without choices[0].message.content.",
            "Point judge at an OpenAI-compatible chat-completions server.",
        ) from exc
    return str(content or "")
