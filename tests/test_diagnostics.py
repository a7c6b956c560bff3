"""Check issuer in admin, against a real issuer that publishes an entry PyJWT cannot load."""

import json

from django.contrib.messages import get_messages

from tests.test_jwks import CannedIssuer


def test_check_issuer_lists_an_alg_none_entry_and_keeps_the_good_keys(
    admin_client, make_tenant, issuer
):
    published = issuer.store.jwks("acme")["keys"]
    canned = CannedIssuer()
    try:
        body = json.dumps({"keys": [{**published[0], "kid": "forged", "alg": "none"}, *published]})
        url = canned.answer(200, body.encode())
        tenant = make_tenant("acme", jwks_url=url)

        response = admin_client.post(f"/admin/tenants/tenant/{tenant.pk}/check-issuer/")
    finally:
        canned.shutdown()
        canned.server_close()

    said = [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]
    assert response.status_code == 302
    assert (
        "error",
        f"Key set at {url}: Key 'forged' is not a public key PyJWT loads for alg 'none'.",
    ) in said
    assert any(tag == "success" and "1 key(s)" in message for tag, message in said)
