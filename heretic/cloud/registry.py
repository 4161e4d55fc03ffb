"""Is the image there, for anyone? An anonymous manifest check before any rental.

A Vast.ai instance whose image cannot be pulled sits at "loading", billing; a RunPod pod
retries the pull. So `heretic cloud launch` and `monitor --launch` ask the image's registry,
without credentials, whether the tag's manifest can be pulled, the way a pull starts (the
OCI distribution spec, as ghcr.io and Docker Hub implement it): `HEAD /v2/<repo>/manifests/
<tag>`; a 401 names a token endpoint in its `WWW-Authenticate: Bearer realm=...,service=...,
scope=...` challenge; an anonymous `GET realm?service=...&scope=repository:<repo>:pull` gives
a token (ghcr.io hands one out for public packages, and a token that cannot read a private
one); the HEAD is repeated with it. 200: there. 404: no such tag. 401/403 with a token: the
package is private (ghcr.io makes the first push of a package private). A registry that
cannot be reached fails too: the provider would not reach it either, or the tag is a typo.
Hosts `localhost` and `127.0.0.1` are spoken to over plain HTTP, as docker does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from heretic.errors import CloudError

ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
DOCKER_HUB = "registry-1.docker.io"


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    reference: str  # a tag or a digest

    @property
    def base(self) -> str:
        host = self.registry.split(":")[0]
        scheme = "http" if host in ("localhost", "127.0.0.1") else "https"
        return f"{scheme}://{self.registry}"


def parse_image(image: str) -> ImageRef:
    """`ghcr.io/org/name:tag`, `org/name` (Docker Hub), `name@sha256:...`."""
    name, reference = image, "latest"
    if "@" in name:
        name, reference = name.split("@", 1)
    else:
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, reference = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name if "/" in name else f"library/{name}"
    if not repository or not reference:
        raise CloudError(f"'{image}' is not an image name.", "Use REGISTRY/ORG/NAME:TAG.")
    return ImageRef(registry, repository, reference)


def _challenge(header: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def check_pullable(image: str, *, transport: httpx.BaseTransport | None = None) -> ImageRef:
    """Raise CloudError (in seconds) unless `image` can be pulled anonymously."""
    ref = parse_image(image)
    url = f"{ref.base}/v2/{ref.repository}/manifests/{ref.reference}"
    try:
        with httpx.Client(timeout=15.0, transport=transport, follow_redirects=True) as http:
            response = http.head(url, headers={"Accept": ACCEPT})
            if response.status_code == 401:
                token = _anonymous_token(http, ref, response.headers.get("www-authenticate", ""))
                if token is not None:
                    response = http.head(
                        url, headers={"Accept": ACCEPT, "Authorization": f"Bearer {token}"}
                    )
    except httpx.HTTPError as exc:
        raise CloudError(
            f"The image registry {ref.registry} could not be reached to check {image} "
            f"({type(exc).__name__}).",
            "Check the image name and your connection; the rented machine would have to pull "
            "it from there.",
        ) from exc
    status = response.status_code
    if status == 200:
        return ref
    if status == 404:
        raise CloudError(
            f"The image {image} does not exist: {ref.registry} has no tag '{ref.reference}' "
            f"for {ref.repository}.",
            "heretic's release images exist only once a release tag is pushed (the workflow "
            "builds them); pass --image with a tag that exists (docs/container.md).",
        )
    if status in (401, 403):
        raise CloudError(
            f"The image {image} cannot be pulled without credentials (HTTP {status}): the "
            "package is private, or the tag does not exist.",
            "On ghcr.io the first push makes a package private: make it public under the "
            "package's Package settings > Change visibility (docs/container.md), or pass "
            "--image with a public image.",
        )
    raise CloudError(
        f"The registry {ref.registry} answered HTTP {status} for {image}.",
        "Try again in a minute, or pass --image with another registry's copy.",
    )


def _anonymous_token(http: httpx.Client, ref: ImageRef, header: str) -> str | None:
    if not header.lower().startswith("bearer"):
        return None
    fields = _challenge(header)
    realm = fields.get("realm")
    if not realm:
        return None
    params = {"scope": f"repository:{ref.repository}:pull"}
    if fields.get("service"):
        params["service"] = fields["service"]
    answer = http.get(realm, params=params)
    if answer.status_code != 200:
        return None
    try:
        data = answer.json()
    except ValueError:
        return None
    token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
    return str(token) if token else None
