"""Error codes in words: what a message's ``error_code`` means, whichever gateway gave it.

A receipt carries a bare code (an SMPP receipt's ``err:001``, a Twilio ``ErrorCode`` 30003, a
Kannel DLR type), and the platform's own codes name what it decided (``suppressed``,
``retries_exhausted``). Reads show ``failure_reason``: the gateway's own text when it sent one,
otherwise this table's. Receipt ``err`` values on SMPP and the simulator are GSM MAP error causes
(3GPP TS 29.002), the convention SMSCs follow for the three-digit field.
"""

from __future__ import annotations

# The platform's own codes (gateways.delivery, campaigns.dispatch, the adapters).
PLATFORM = {
    "invalid_destination": "The gateway refused the destination number as invalid.",
    "suppressed": "Not sent: the number opted out before the message was handed to a gateway.",
    "withdrawn": "Not sent: the campaign was cancelled before this message went out.",
    "retries_exhausted": "Not sent: the gateway refused it temporarily on every attempt until retries ran out.",
    "expired": "No delivery receipt arrived within the validity period: treated as not delivered.",
    "submit_interrupted": "The submission was interrupted: the gateway may or may not have it (never resent).",
    "throttled": "The gateway asked to slow down (throttled); the message is retried.",
    "link_down": "The connection to the gateway dropped before submission; the message is retried.",
    "unavailable": "The gateway could not be reached; the message is retried.",
    "not_routable": "The gateway has no route to this destination.",
    "rejected": "The gateway rejected the message.",
    "too_many_parts": "The message has more parts than the gateway can join.",
    "sender_missing": "No sender ID is configured for this gateway.",
    "canceled": "The provider cancelled the message before sending it.",
    "undelivered": "The operator reported the message undelivered (no cause given).",
    "smsc_reject": "The SMSC rejected the message (Kannel: NACK).",
}

# GSM MAP error causes, as SMSCs put them in a receipt's three-digit err field.
MAP_CAUSES = {
    "001": "Unknown subscriber: the number is not in service.",
    "005": "Unidentified subscriber.",
    "006": "Absent subscriber: the phone was off or out of coverage.",
    "009": "Illegal subscriber: the network refused the subscriber.",
    "011": "Teleservice not provisioned: the subscriber cannot receive SMS.",
    "012": "Illegal equipment.",
    "013": "Call barred: the subscriber or operator bars messages.",
    "021": "Facility not supported by the network.",
    "027": "Absent subscriber: the phone was off or out of coverage.",
    "031": "Subscriber busy for MT SMS.",
    "032": "SMS delivery failure: the handset could not accept it (memory full or error).",
    "033": "Message waiting list full.",
    "034": "System failure in the network.",
    "035": "Data missing.",
    "036": "Unexpected data value.",
}

# SMPP 3.4 command_status values the bind worker records as smpp_0x.. (its own words come with them).
SMPP_STATUS = {
    "0x01": "ESME_RINVMSGLEN: message length is invalid.",
    "0x08": "ESME_RSYSERR: system error at the SMSC.",
    "0x0a": "ESME_RINVSRCADR: invalid source address (sender ID).",
    "0x0b": "ESME_RINVDSTADR: invalid destination address.",
    "0x0d": "ESME_RBINDFAIL: bind failed.",
    "0x14": "ESME_RMSGQFUL: the SMSC's message queue is full.",
    "0x45": "ESME_RSUBMITFAIL: submit_sm failed.",
    "0x58": "ESME_RTHROTTLED: throttling error (too many messages per second).",
    "0x61": "ESME_RINVSCHED: invalid scheduled delivery time.",
    "0x62": "ESME_RINVEXPIRY: invalid validity period.",
}

# Twilio error codes a status callback carries (ErrorCode).
TWILIO = {
    "30001": "Queue overflow at Twilio.",
    "30002": "Account suspended at Twilio.",
    "30003": "Unreachable destination handset.",
    "30004": "Message blocked (by the recipient or the carrier).",
    "30005": "Unknown destination handset: the number does not exist.",
    "30006": "Landline or unreachable carrier.",
    "30007": "Carrier violation: the message was filtered as spam.",
    "30008": "Unknown error reported by the carrier.",
    "30009": "Missing segment: a part of the message was lost.",
    "30010": "Message price exceeds the configured max price.",
    "failed": "Twilio could not send the message.",
}


def failure_reason(*, provider: str, code: str, reason: str = "") -> str:
    """The reason a client is shown for ``code``: the gateway's own text when there is one, else
    the meaning of the code for that provider, else a sentence naming the code."""
    if reason:
        return reason
    if not code:
        return ""
    key = code.strip().lower()
    if key in PLATFORM:
        return PLATFORM[key]
    if key.startswith("smpp_") and key[5:] in SMPP_STATUS:
        return SMPP_STATUS[key[5:]]
    if provider == "twilio":
        found = TWILIO.get(key.removeprefix("twilio_"))
        if found:
            return found
    if key.isdecimal() and key.zfill(3) in MAP_CAUSES:
        return MAP_CAUSES[key.zfill(3)]
    return f"The gateway reported error {code} without an explanation (see the gateway's documentation)."
