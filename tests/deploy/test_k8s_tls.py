"""HTTPS on the Ingress (components/ingress-tls): every overlay but `local` serves its
hosts over TLS with a certificate cert-manager issues and redirects plain HTTP (HSTS is
ingress-nginx's default on a TLS host);
`local` stays on plain HTTP, as docs/deployment.md tells people to call it.

Offline only: what ingress-nginx and cert-manager do with these fields is their documented
behaviour (docs/deployment.md, "HTTPS on the Ingress"), not run here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from .conftest import K8S, OVERLAYS, ROOT, find, one
from .test_manifests import routed

pytestmark = pytest.mark.k8s

TLS_OVERLAYS = tuple(env for env in OVERLAYS if env != "local")
NGINX = "nginx.ingress.kubernetes.io/"
ISSUER = "cert-manager.io/cluster-issuer"
DEPLOYMENT_MD = ROOT / "docs" / "deployment.md"


def ingress(rendered: dict[str, list[dict[str, Any]]], env: str) -> dict[str, Any]:
    return one(rendered[env], "Ingress", "comments-api")


def annotations(ing: dict[str, Any]) -> dict[str, str]:
    return ing["metadata"].get("annotations", {})


def rule_hosts(ing: dict[str, Any]) -> list[str]:
    return [rule["host"] for rule in ing["spec"]["rules"]]


def https_section() -> str:
    text = DEPLOYMENT_MD.read_text()
    match = re.search(r"^## HTTPS on the Ingress\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "docs/deployment.md: the section 'HTTPS on the Ingress' moved"
    return match.group(1)


@pytest.mark.parametrize("env", TLS_OVERLAYS)
def test_tls_covers_exactly_the_rule_hosts(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    ing = ingress(rendered, env)
    tls = ing["spec"].get("tls")
    assert tls, f"{env}: the Ingress serves plain HTTP only"
    hosts = rule_hosts(ing)
    assert hosts
    assert all("." in h and h != "PARAMETER" for h in hosts), hosts
    covered = [h for entry in tls for h in entry["hosts"]]
    # A rule host missing from tls gets the controller's default certificate; a tls host
    # without a rule is a certificate issued for nothing.
    assert sorted(covered) == sorted(hosts)
    for entry in tls:
        assert entry["secretName"], entry
    # The certificate's Secret is cert-manager's, never rendered (nor any other Secret).
    assert not find(rendered[env], "Secret")


@pytest.mark.parametrize("env", TLS_OVERLAYS)
def test_certificate_comes_from_a_cluster_issuer(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    issuer = annotations(ingress(rendered, env)).get(ISSUER, "")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", issuer), f"{env}: issuer {issuer!r}"
    # ingress-shim makes the Certificate from the annotation: no cert-manager object is
    # rendered, so clusters without its CRDs (the kind E2E of dev.yml) still apply it.
    assert not [d for d in rendered[env] if d["apiVersion"].startswith("cert-manager.io/")]


@pytest.mark.parametrize("env", TLS_OVERLAYS)
def test_plain_http_is_always_redirected(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    notes = annotations(ingress(rendered, env))
    # force-: ssl-redirect alone redirects only once the certificate exists.
    assert notes.get(NGINX + "force-ssl-redirect") == "true"
    assert notes.get(NGINX + "ssl-redirect", "true") == "true"
    assert notes.get(NGINX + "preserve-trailing-slash") == "true"


@pytest.mark.parametrize("env", OVERLAYS)
def test_no_header_annotation_that_a_default_controller_answers_503(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    """HSTS comes from ingress-nginx's `hsts` default. Headers through `custom-headers`
    need the controller's global-allowed-response-headers to list them; a controller
    without it answers 503 on every path of the Ingress."""
    notes = annotations(ingress(rendered, env))
    assert NGINX + "custom-headers" not in notes
    assert NGINX + "hsts" not in notes  # not an annotation: the ConfigMap's, kept on


@pytest.mark.parametrize("env", OVERLAYS)
def test_no_snippet_annotations(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    # Recent ingress-nginx refuses snippets by default (allow-snippet-annotations: false).
    notes = annotations(ingress(rendered, env))
    assert not [key for key in notes if key.startswith(NGINX) and key.endswith("-snippet")]


def test_production_aws_serves_production_ingress(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """On EKS ingress-nginx terminates TLS as in production: nothing in front of it
    (no AWS Load Balancer Controller, no ACM certificate) is set up by this repository."""
    assert ingress(rendered, "production-aws") == ingress(rendered, "production")


def test_every_parameter_is_filled_and_the_parameters_are_not_deployed(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    component = yaml.safe_load(
        (K8S / "components" / "ingress-tls" / "kustomization.yaml").read_text()
    )
    used = {
        r["source"]["fieldPath"].removeprefix("data.")
        for r in component["replacements"]
        if r["source"]["kind"] == "ConfigMap"
    }
    for env in TLS_OVERLAYS:
        text = yaml.safe_dump(ingress(rendered, env))
        assert "PARAMETER" not in text, env
        assert not find(rendered[env], "ConfigMap", "comments-api-ingress-parameters")
    for env in ("staging", "production"):
        params = K8S / "overlays" / env / "ingress-parameters.yaml"
        assert set(yaml.safe_load(params.read_text())["data"]) == used, env


def test_docs_name_what_the_cluster_needs(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The operator's prerequisites are listed where they are looked for: each issuer the
    overlays name, and the controller's HSTS setting the overlays rely on."""
    section = https_section()
    for env in TLS_OVERLAYS:
        ing = ingress(rendered, env)
        assert f"`{annotations(ing)[ISSUER]}`" in section, env
    assert '`hsts: "true"`' in section
    assert "offline" in section


def test_local_stays_plain_http_as_documented(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """minikube has no certificate for comments.local: a redirect to HTTPS there would
    break the docs' `curl http://comments.local/...`."""
    ing = ingress(rendered, "local")
    assert "tls" not in ing["spec"]
    notes = annotations(ing)
    assert notes.get(NGINX + "force-ssl-redirect", "false") == "false"
    assert ISSUER not in notes
    calls = re.findall(
        r'curl --resolve "([^:"]+):80:[^"]*" http://([^/\s]+)(/\S*)', DEPLOYMENT_MD.read_text()
    )
    assert calls, "docs/deployment.md no longer shows how to reach the local Ingress"
    for resolved, host, path in calls:
        assert resolved == host
        assert host in rule_hosts(ing)
        assert routed(ing, path), path
