"""SMPP 3.4 constants shared by the bind worker (gateways.smpp) and the SMSC simulator
(tests.support.smsc): framing, command ids, command_status values, optional parameter (TLV)
tags, message states, esm_class and data_coding bits, address TON/NPI.

Only the standard library: the simulator imports this in a plain asyncio process (no Django).
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">IIII")
HEADER_SIZE = 16
MAX_PDU_LENGTH = 64 * 1024  # far above any legal PDU; longer ones are a framing error

# --- command ids ------------------------------------------------------------------------------------
GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
QUERY_SM = 0x00000003
SUBMIT_SM = 0x00000004
DELIVER_SM = 0x00000005
UNBIND = 0x00000006
REPLACE_SM = 0x00000007
CANCEL_SM = 0x00000008
BIND_TRANSCEIVER = 0x00000009
OUTBIND = 0x0000000B
ENQUIRE_LINK = 0x00000015
SUBMIT_MULTI = 0x00000021
ALERT_NOTIFICATION = 0x00000102
DATA_SM = 0x00000103
RESP_BIT = 0x80000000  # set on every response id

SUBMIT_SM_RESP = SUBMIT_SM | RESP_BIT
DELIVER_SM_RESP = DELIVER_SM | RESP_BIT
UNBIND_RESP = UNBIND | RESP_BIT
ENQUIRE_LINK_RESP = ENQUIRE_LINK | RESP_BIT
DATA_SM_RESP = DATA_SM | RESP_BIT

COMMAND_NAMES = {
    GENERIC_NACK: "generic_nack",
    BIND_RECEIVER: "bind_receiver",
    BIND_TRANSMITTER: "bind_transmitter",
    QUERY_SM: "query_sm",
    SUBMIT_SM: "submit_sm",
    DELIVER_SM: "deliver_sm",
    UNBIND: "unbind",
    REPLACE_SM: "replace_sm",
    CANCEL_SM: "cancel_sm",
    BIND_TRANSCEIVER: "bind_transceiver",
    OUTBIND: "outbind",
    ENQUIRE_LINK: "enquire_link",
    SUBMIT_MULTI: "submit_multi",
    ALERT_NOTIFICATION: "alert_notification",
    DATA_SM: "data_sm",
}
COMMAND_NAMES.update(
    {code | RESP_BIT: f"{name}_resp" for code, name in list(COMMAND_NAMES.items()) if code != RESP_BIT}
)

# --- command_status values ------------------------------------------------------------------------
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RINVDSTADR = 0x0B
ESME_RBINDFAIL = 0x0D
ESME_RMSGQFUL = 0x14
ESME_RTHROTTLED = 0x58
ESME_RX_T_APPN = 0x64

STATUS_NAMES = {
    ESME_ROK: "ESME_ROK",
    ESME_RINVMSGLEN: "ESME_RINVMSGLEN",
    ESME_RINVCMDLEN: "ESME_RINVCMDLEN",
    ESME_RINVCMDID: "ESME_RINVCMDID",
    ESME_RINVBNDSTS: "ESME_RINVBNDSTS",
    ESME_RALYBND: "ESME_RALYBND",
    ESME_RSYSERR: "ESME_RSYSERR",
    ESME_RINVDSTADR: "ESME_RINVDSTADR",
    ESME_RBINDFAIL: "ESME_RBINDFAIL",
    ESME_RMSGQFUL: "ESME_RMSGQFUL",
    ESME_RTHROTTLED: "ESME_RTHROTTLED",
}


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, f"0x{status:08X}")


# --- optional parameter tags ----------------------------------------------------------------------
TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_SAR_MSG_REF_NUM = 0x020C
TAG_SAR_TOTAL_SEGMENTS = 0x020E
TAG_SAR_SEGMENT_SEQNUM = 0x020F
TAG_SC_INTERFACE_VERSION = 0x0210
TAG_NETWORK_ERROR_CODE = 0x0423
TAG_MESSAGE_PAYLOAD = 0x0424
TAG_MESSAGE_STATE = 0x0427

# message_state values (SMPP 3.4 §5.2.28)
MESSAGE_STATES = {
    "ENROUTE": 1,
    "DELIVRD": 2,
    "EXPIRED": 3,
    "DELETED": 4,
    "UNDELIV": 5,
    "ACCEPTD": 6,
    "UNKNOWN": 7,
    "REJECTD": 8,
}

ESM_CLASS_RECEIPT = 0x04
ESM_CLASS_UDHI = 0x40
DATA_CODING_DEFAULT = 0x00
DATA_CODING_UCS2 = 0x08
SMPP_VERSION_34 = 0x34

TON_INTERNATIONAL, NPI_E164 = 1, 1
TON_ALPHANUMERIC, NPI_UNKNOWN = 5, 0
