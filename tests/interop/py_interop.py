"""Sign and verify webhooks with the providers' own Python libraries.

Driven by the Rust interop tests: reads {"cases": [...]} as JSON on stdin and
prints one JSON result per case, as a list, on stdout. A case is
  {"lib": "standardwebhooks" | "stripe" | "slack" | "pynacl-v1a" | "pynacl-discord",
   "op": "sign" | "verify",
   "secret": str, "id": str, "timestamp": int, "body": str, "headers": {..}}
"sign" answers {"headers": {name: value}}; "verify" answers
{"ok": bool, "error": str | null, "id": str | null}. Bodies are text: these
libraries all decode the body as UTF-8 before signing.
"""

import json
import sys
from datetime import datetime, timezone


def standardwebhooks_case(case):
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    wh = Webhook(case["secret"])
    if case["op"] == "sign":
        ts = datetime.fromtimestamp(case["timestamp"], tz=timezone.utc)
        sig = wh.sign(case["id"], ts, case["body"])
        return {
            "headers": {
                "webhook-id": case["id"],
                "webhook-timestamp": str(case["timestamp"]),
                "webhook-signature": sig,
            }
        }
    try:
        wh.verify(case["body"].encode("utf-8"), case["headers"], json_parse=False)
        headers = {k.lower(): v for k, v in case["headers"].items()}
        return {"ok": True, "error": None, "id": headers.get("webhook-id")}
    except (WebhookVerificationError, ValueError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "id": None}


def stripe_case(case):
    import stripe

    if case["op"] == "sign":
        header = stripe.WebhookSignature.generate_signature_header(
            case["body"], case["secret"], timestamp=case["timestamp"]
        )
        return {"headers": {"Stripe-Signature": header}}
    header = {k.lower(): v for k, v in case["headers"].items()}.get("stripe-signature")
    try:
        # construct_event verifies (tolerance 300 s) and parses the event.
        event = stripe.Webhook.construct_event(
            case["body"].encode("utf-8"), header, case["secret"]
        )
        return {"ok": True, "error": None, "id": event.id}
    except (stripe.SignatureVerificationError, ValueError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "id": None}


def slack_case(case):
    from slack_sdk.signature import SignatureVerifier

    verifier = SignatureVerifier(case["secret"])
    if case["op"] == "sign":
        sig = verifier.generate_signature(
            timestamp=str(case["timestamp"]), body=case["body"]
        )
        return {
            "headers": {
                "X-Slack-Request-Timestamp": str(case["timestamp"]),
                "X-Slack-Signature": sig,
            }
        }
    ok = verifier.is_valid_request(case["body"].encode("utf-8"), case["headers"])
    return {"ok": bool(ok), "error": None if ok else "is_valid_request: False", "id": None}


def _signing_key(secret):
    """A `whsk_<base64>` signing key (32-byte seed, or libsodium's 64-byte
    seed + public key) as a PyNaCl SigningKey."""
    import base64

    from nacl.signing import SigningKey

    raw = base64.b64decode(secret[len("whsk_"):], validate=True)
    return SigningKey(raw[:32])


def pynacl_v1a_case(case):
    """Standard Webhooks asymmetric signatures, written from the spec text
    (spec/standard-webhooks.md, "Signature scheme"): ed25519 over
    `msg_id.timestamp.payload`, `v1a,<base64>` entries in the space-delimited
    `webhook-signature` header, keys serialized `whsk_` / `whpk_` + base64.
    PyNaCl (libsodium) is the independent ed25519 implementation."""
    import base64

    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    if case["op"] == "sign":
        sk = _signing_key(case["secret"])
        msg = f'{case["id"]}.{case["timestamp"]}.{case["body"]}'.encode("utf-8")
        sig = base64.b64encode(sk.sign(msg).signature).decode()
        public = "whpk_" + base64.b64encode(bytes(sk.verify_key)).decode()
        return {
            "headers": {
                "webhook-id": case["id"],
                "webhook-timestamp": str(case["timestamp"]),
                "webhook-signature": f"v1a,{sig}",
            },
            "public_key": public,
        }
    secret = case["secret"]
    if secret.startswith("whsk_"):
        vk = _signing_key(secret).verify_key
    else:
        vk = VerifyKey(base64.b64decode(secret[len("whpk_"):], validate=True))
    headers = {k.lower(): v for k, v in case["headers"].items()}
    msg_id = headers["webhook-id"]
    ts = headers["webhook-timestamp"]
    msg = f'{msg_id}.{ts}.{case["body"]}'.encode("utf-8")
    for entry in headers["webhook-signature"].split(" "):
        version, _, value = entry.partition(",")
        if version != "v1a":
            continue
        try:
            vk.verify(msg, base64.b64decode(value, validate=True))
            return {"ok": True, "error": None, "id": msg_id}
        except (BadSignatureError, ValueError):
            continue
    return {"ok": False, "error": "no valid v1a signature", "id": None}


def pynacl_discord_case(case):
    """Discord's interaction signatures as its developer docs' Python example
    checks them: ed25519 over timestamp + body, `X-Signature-Ed25519` (hex)
    and `X-Signature-Timestamp`, the application's public key in hex."""
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    if case["op"] == "sign":
        sk = _signing_key(case["secret"])
        ts = str(case["timestamp"])
        sig = sk.sign(f'{ts}{case["body"]}'.encode("utf-8")).signature.hex()
        return {
            "headers": {"X-Signature-Ed25519": sig, "X-Signature-Timestamp": ts},
            "public_key": bytes(sk.verify_key).hex(),
        }
    secret = case["secret"]
    if secret.startswith("whsk_"):
        vk = _signing_key(secret).verify_key
    else:
        vk = VerifyKey(bytes.fromhex(secret))
    headers = {k.lower(): v for k, v in case["headers"].items()}
    try:
        vk.verify(
            f'{headers["x-signature-timestamp"]}{case["body"]}'.encode("utf-8"),
            bytes.fromhex(headers["x-signature-ed25519"]),
        )
        return {"ok": True, "error": None, "id": None}
    except (BadSignatureError, ValueError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "id": None}


HANDLERS = {
    "standardwebhooks": standardwebhooks_case,
    "stripe": stripe_case,
    "slack": slack_case,
    "pynacl-v1a": pynacl_v1a_case,
    "pynacl-discord": pynacl_discord_case,
}


def main():
    cases = json.load(sys.stdin)["cases"]
    results = [HANDLERS[c["lib"]](c) for c in cases]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
