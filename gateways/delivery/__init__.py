"""The delivery layer: queue, submit at most once, ingest receipts and inbound SMS.

State machine of OutboundMessage:
    queued -> submitting -> submitted -> delivered | failed | expired
    submitting -> unknown   (worker died mid-submit: reconciled, never resent)
    queued -> failed        (permanent refusal, or retries exhausted)
The claim queued -> submitting is committed before the gateway is called, so a message
is handed to a gateway at most once whatever crashes afterwards.
"""
