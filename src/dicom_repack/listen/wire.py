"""The bytes on the wire for the data phase of a Storage SCP association.

Why hand-written: pynetdicom decodes every P-DATA-TF PDU into objects, passes
them through two polling threads (DUL reactor and association reactor, each
sleeping 1 ms when idle) and its state machine; that costs more CPU per
instance than a whole per-instance repack behind storescp. The data phase of a
Storage SCP needs very little of it: split PDVs, read a handful of command
elements (implicit VR little endian, PS3.7 §6.3.1), answer with a fixed-shape
response. Association negotiation (A-ASSOCIATE-RQ/-AC) stays with pynetdicom's
PDU codecs, see :mod:`dicom_repack.listen.assoc`.

Everything here is pure functions over ``bytes``; no sockets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "Command",
    "abort_pdu",
    "decode_command",
    "echo_response",
    "file_header",
    "pdata_pdu",
    "reject_pdu",
    "release_rp_pdu",
    "store_response",
]

#: Our Implementation Class UID (2.25 + a fixed UUID as an integer, PS3.5 §B.2)
#: and version name (at most 16 characters), written in the file meta group and
#: sent in the A-ASSOCIATE-AC.
IMPLEMENTATION_CLASS_UID = "2.25.212953651203866414788542735424431541915"
IMPLEMENTATION_VERSION_NAME = "DICOM_REPACK_01"

# PDU types (PS3.8 §9.3)
PDU_ASSOCIATE_RQ = 0x01
PDU_ASSOCIATE_AC = 0x02
PDU_ASSOCIATE_RJ = 0x03
PDU_P_DATA_TF = 0x04
PDU_RELEASE_RQ = 0x05
PDU_RELEASE_RP = 0x06
PDU_ABORT = 0x07

# DIMSE command fields (PS3.7 §E.1)
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030

#: CommandDataSetType value meaning "no data set follows" (PS3.7 §E.1-1)
NO_DATASET = 0x0101

_HDR = struct.Struct(">BBL")
_PDV = struct.Struct(">LBB")
_ELEM = struct.Struct("<HHL")


@dataclass(frozen=True, slots=True)
class Command:
    """The command elements a Storage SCP acts on (others are ignored)."""

    field: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    has_dataset: bool


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """Read a DIMSE command set (always implicit VR little endian).

    Raises ValueError on a malformed or incomplete command, so the caller can
    abort the association rather than guess.
    """
    mv = memoryview(data)
    pos, end = 0, len(mv)
    field = message_id = -1
    sop_class = sop_instance = ""
    dataset_type = NO_DATASET
    while pos < end:
        if pos + 8 > end:
            raise ValueError("command set ends inside an element header")
        group, elem, length = _ELEM.unpack_from(mv, pos)
        pos += 8
        if group != 0x0000:
            raise ValueError(f"element ({group:04X},{elem:04X}) in a command set")
        if pos + length > end:
            raise ValueError(f"command element (0000,{elem:04X}) runs past the command set")
        value = mv[pos : pos + length]
        pos += length
        if elem == 0x0100 and length == 2:
            field = value[0] | value[1] << 8
        elif elem == 0x0110 and length == 2:
            message_id = value[0] | value[1] << 8
        elif elem == 0x0800 and length == 2:
            dataset_type = value[0] | value[1] << 8
        elif elem == 0x0002:
            sop_class = _uid(value)
        elif elem == 0x1000:
            sop_instance = _uid(value)
    if field < 0 or message_id < 0:
        raise ValueError("command set without CommandField or MessageID")
    return Command(field, message_id, sop_class, sop_instance, dataset_type != NO_DATASET)


def _uid(value: memoryview) -> str:
    return bytes(value).rstrip(b"\x00 ").decode("ascii", "replace")


def _element(elem: int, value: bytes) -> bytes:
    return _ELEM.pack(0x0000, elem, len(value)) + value


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _command_set(elements: list[bytes]) -> bytes:
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<L", len(body))) + body


def store_response(cmd: Command, status: int, comment: str = "") -> bytes:
    """The C-STORE-RSP command set answering ``cmd`` with ``status``.

    ``comment`` goes into ErrorComment (0000,0902), cut to its 64-character
    limit, so a sender's log says why an instance was refused.
    """
    elements = [
        _element(0x0002, _ui(cmd.sop_class_uid)),
        _element(0x0100, _us(C_STORE_RSP)),
        _element(0x0120, _us(cmd.message_id)),
        _element(0x0800, _us(NO_DATASET)),
        _element(0x0900, _us(status)),
    ]
    if comment and status != 0:
        text = comment.encode("ascii", "replace")[:64]
        if len(text) % 2:
            text += b" "
        elements.append(_element(0x0902, text))
    elements.append(_element(0x1000, _ui(cmd.sop_instance_uid)))
    return _command_set(elements)


def echo_response(cmd: Command) -> bytes:
    """The C-ECHO-RSP command set (status success) answering ``cmd``."""
    return _command_set(
        [
            _element(0x0002, _ui(cmd.sop_class_uid or "1.2.840.10008.1.1")),
            _element(0x0100, _us(C_ECHO_RSP)),
            _element(0x0120, _us(cmd.message_id)),
            _element(0x0800, _us(NO_DATASET)),
            _element(0x0900, _us(0x0000)),
        ]
    )


def pdata_pdu(context_id: int, command: bytes) -> bytes:
    """A P-DATA-TF PDU carrying one complete command PDV (message control 0x03).

    Response command sets are ~100 bytes, far under any peer's maximum PDU
    length (the minimum a peer may announce is far larger), so one PDV suffices.
    """
    pdv = _PDV.pack(len(command) + 2, context_id, 0x03) + command
    return _HDR.pack(PDU_P_DATA_TF, 0, len(pdv)) + pdv


def release_rp_pdu() -> bytes:
    """A-RELEASE-RP (PS3.8 §9.3.7)."""
    return _HDR.pack(PDU_RELEASE_RP, 0, 4) + b"\x00\x00\x00\x00"


def abort_pdu(source: int = 0x02, reason: int = 0x00) -> bytes:
    """A-ABORT (PS3.8 §9.3.8); source 0x02 = service provider, 0x00 = user."""
    return _HDR.pack(PDU_ABORT, 0, 4) + bytes((0, 0, source, reason))


def reject_pdu(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 §9.3.4)."""
    return _HDR.pack(PDU_ASSOCIATE_RJ, 0, 4) + bytes((0, result, source, reason))


def _meta_element(elem: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHL", 0x0002, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, elem, vr, len(value)) + value


def file_header(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str
) -> bytes:
    """Preamble, 'DICM' and the file meta group for a received data set (PS3.10 §7.1).

    Built by hand (no pydicom) because it runs once per instance on the hot
    path. SourceApplicationEntityTitle records the sender, as storescp does.
    """
    ae = source_ae.strip().encode("ascii", "replace")
    if len(ae) % 2:
        ae += b" "
    version = IMPLEMENTATION_VERSION_NAME.encode("ascii")
    if len(version) % 2:
        version += b" "
    body = b"".join(
        (
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", _ui(sop_class_uid)),
            _meta_element(0x0003, b"UI", _ui(sop_instance_uid)),
            _meta_element(0x0010, b"UI", _ui(transfer_syntax)),
            _meta_element(0x0012, b"UI", _ui(IMPLEMENTATION_CLASS_UID)),
            _meta_element(0x0013, b"SH", version),
            *((_meta_element(0x0016, b"AE", ae),) if ae else ()),
        )
    )
    group_length = _meta_element(0x0000, b"UL", struct.pack("<L", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body
