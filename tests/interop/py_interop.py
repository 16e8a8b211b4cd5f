"""Sign and verify webhooks with the providers' own Python libraries.

Driven by the Rust interop tests: reads {"cases": [...]} as JSON on stdin and
prints one JSON result per case, as a list, on stdout. A case is
  {"lib": "standardwebhooks" | "stripe" | "slack", "op": "sign" | "verify",
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


HANDLERS = {
    "standardwebhooks": standardwebhooks_case,
    "stripe": stripe_case,
    "slack": slack_case,
}


def main():
    cases = json.load(sys.stdin)["cases"]
    results = [HANDLERS[c["lib"]](c) for c in cases]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
