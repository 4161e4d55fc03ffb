"""A loopback container registry answering like ghcr.io (OCI distribution spec): a manifest
HEAD without a token answers 401 with a `WWW-Authenticate: Bearer realm=...,service=...,
scope=...` challenge; the realm (ghcr.io's /token) hands an anonymous pull token out for a
public repository and refuses one for a private repository; with the token the HEAD answers
200 for a tag that exists and 404 (MANIFEST_UNKNOWN) for one that does not."""

from __future__ import annotations

from fakes.fake_vast import LoopbackServer, Recorded, Reply

ANON = "anon-pull-token"


class FakeRegistry(LoopbackServer):
    def __init__(self) -> None:
        self.tags: dict[str, set[str]] = {"heretic-llm/heretic": {"0.1.0-cu126"}}
        self.private: set[str] = set()
        super().__init__(self.route)

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def image(self, tag: str = "0.1.0-cu126", repo: str = "heretic-llm/heretic") -> str:
        return f"{self.host}/{repo}:{tag}"

    def route(self, r: Recorded) -> Reply:
        if r.method == "GET" and r.path == "/token":
            scope = (r.query.get("scope") or [""])[0]
            repo = scope.removeprefix("repository:").removesuffix(":pull")
            if repo in self.private or repo not in self.tags:
                return Reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
            return Reply(200, {"token": ANON})
        if r.method == "HEAD" and "/manifests/" in r.path:
            repo, _, tag = r.path.removeprefix("/v2/").partition("/manifests/")
            if r.headers.get("authorization") != f"Bearer {ANON}":
                challenge = (
                    f'Bearer realm="{self.url}/token",service="ghcr.io",'
                    f'scope="repository:{repo}:pull"'
                )
                return Reply(401, headers={"WWW-Authenticate": challenge})
            if tag not in self.tags.get(repo, set()):
                return Reply(404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})
            return Reply(200, headers={"Docker-Content-Digest": "sha256:" + "0" * 64})
        return Reply(404, {"errors": [{"code": "NAME_UNKNOWN"}]})
