"""Association negotiation for the Storage SCP, done by pynetdicom's codecs.

pynetdicom decodes the A-ASSOCIATE-RQ and encodes the A-ASSOCIATE-AC; this
module only decides: which calling AE titles may associate, which abstract and
transfer syntaxes are accepted, and what maximum PDU length we announce.

Transfer syntax choice differs from :func:`pynetdicom.presentation.negotiate_as_acceptor`
on purpose: we take the *requestor's* first proposed syntax that we support,
because the sender lists its file's own encoding first and accepting it means
the data set arrives byte for byte as it was stored (no transcoding by the
sender), which is what gets filed.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from pydicom.uid import UID
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext

from .wire import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

__all__ = [
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "VERIFICATION",
    "Negotiated",
    "Policy",
    "Rejected",
    "negotiate",
]

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"

#: Every storage SOP class pynetdicom knows (170 in pynetdicom 3.0), from its public list.
STORAGE_SOP_CLASSES: frozenset[str] = frozenset(
    str(context.abstract_syntax) for context in AllStoragePresentationContexts
)

#: Accepted transfer syntaxes: the uncompressed ones, deflate, the JPEG family,
#: JPEG-LS, JPEG 2000 (parts 1 and 2), HTJ2K, RLE, and the MPEG/HEVC video
#: syntaxes. None of them is decoded: the data set is filed as received.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Lossless
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.100",  # MPEG2 MP@ML
    "1.2.840.10008.1.2.4.101",  # MPEG2 MP@HL
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264 HP@4.1
    "1.2.840.10008.1.2.4.103",  # MPEG-4 AVC/H.264 BD-compatible
    "1.2.840.10008.1.2.4.104",  # MPEG-4 AVC/H.264 2D
    "1.2.840.10008.1.2.4.105",  # MPEG-4 AVC/H.264 3D
    "1.2.840.10008.1.2.4.106",  # MPEG-4 AVC/H.264 Stereo
    "1.2.840.10008.1.2.4.107",  # HEVC Main
    "1.2.840.10008.1.2.4.108",  # HEVC Main 10
)


@dataclass(frozen=True, slots=True)
class Policy:
    """What this receiver accepts.

    ``allowed_calling`` empty means any calling AE title may associate.
    ``promiscuous`` accepts any abstract syntax for storage (storescp's
    ``--promiscuous``), for private or very new SOP classes.
    ``max_pdu`` is the maximum PDU length we announce (0 = unlimited).
    """

    ae_title: str = "DICOM-REPACK"
    allowed_calling: frozenset[str] = frozenset()
    require_called: bool = False
    promiscuous: bool = False
    max_pdu: int = 131072
    transfer_syntaxes: tuple[str, ...] = TRANSFER_SYNTAXES


@dataclass(frozen=True, slots=True)
class Negotiated:
    """An accepted association: its peer and the contexts it may use."""

    calling_ae: str
    called_ae: str
    #: context ID -> (abstract syntax, transfer syntax)
    contexts: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: the peer's maximum PDU length (0 = unlimited)
    peer_max_pdu: int = 0


class Rejected(Exception):
    """The association is refused; the A-ASSOCIATE-RJ fields say why (PS3.8 §9.3.4)."""

    def __init__(self, result: int, source: int, reason: int, why: str) -> None:
        super().__init__(why)
        self.result, self.source, self.reason = result, source, reason


def negotiate(rq_pdu: bytes, policy: Policy) -> tuple[bytes, Negotiated]:
    """Decide on an A-ASSOCIATE-RQ PDU (all its bytes, header included).

    Returns the encoded A-ASSOCIATE-AC and what was agreed. Raises
    :class:`Rejected` for a refused calling/called AE title or application
    context, and ValueError when the PDU does not decode.
    """
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(rq_pdu)
    rq = pdu.to_primitive()
    calling = rq.calling_ae_title.strip()
    called = rq.called_ae_title.strip()
    if policy.allowed_calling and calling not in policy.allowed_calling:
        raise Rejected(0x01, 0x01, 0x03, f"calling AE title {calling!r} is not allowed")
    if policy.require_called and called != policy.ae_title.strip():
        raise Rejected(0x01, 0x01, 0x07, f"called AE title {called!r} is not ours")
    if str(rq.application_context_name) != APPLICATION_CONTEXT:
        raise Rejected(0x01, 0x01, 0x02, "unsupported application context")

    peer_max = 0
    roles: dict[str, SCP_SCU_RoleSelectionNegotiation] = {}
    for item in rq.user_information:
        if isinstance(item, MaximumLengthNotification):
            peer_max = int(item.maximum_length_received or 0)
        elif isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid:
            roles[str(item.sop_class_uid)] = item

    results, accepted, role_replies = _contexts(
        rq.presentation_context_definition_list, roles, policy
    )

    ac = A_ASSOCIATE()
    ac.application_context_name = UID(APPLICATION_CONTEXT)
    ac.calling_ae_title = rq.calling_ae_title
    ac.called_ae_title = rq.called_ae_title
    ac.result = 0x00
    ac.result_source = 0x01
    ac.presentation_context_definition_results_list = results
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = policy.max_pdu
    class_uid = ImplementationClassUIDNotification()
    class_uid.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ac.user_information = [max_length, class_uid, version, *role_replies]
    out = A_ASSOCIATE_AC()
    out.from_primitive(ac)
    return out.encode(), Negotiated(calling, called, accepted, peer_max)


def _contexts(
    proposed: Collection[PresentationContext],
    roles: dict[str, SCP_SCU_RoleSelectionNegotiation],
    policy: Policy,
) -> tuple[
    list[PresentationContext], dict[int, tuple[str, str]], list[SCP_SCU_RoleSelectionNegotiation]
]:
    """Per proposed context: accept with the sender's first syntax we support, or say why not."""
    supported = set(policy.transfer_syntaxes)
    results: list[PresentationContext] = []
    accepted: dict[int, tuple[str, str]] = {}
    role_replies: dict[str, SCP_SCU_RoleSelectionNegotiation] = {}
    for cx in proposed:
        abstract = str(cx.abstract_syntax)
        offered = [str(ts) for ts in cx.transfer_syntax]
        out = PresentationContext()
        out.context_id = cx.context_id
        out.abstract_syntax = cx.abstract_syntax
        known = abstract == VERIFICATION or abstract in STORAGE_SOP_CLASSES or policy.promiscuous
        choice = next((ts for ts in offered if ts in supported), None)
        role = roles.get(abstract)
        if not known:
            out.result = 0x03  # abstract syntax not supported
        elif choice is None:
            out.result = 0x04  # transfer syntaxes not supported
        elif role is not None and role.scu_role is False:
            out.result = 0x01  # the peer would only act as SCP: no use to a Storage SCP
        else:
            out.result = 0x00
            accepted[int(cx.context_id or 0)] = (abstract, choice)
            if role is not None:
                reply = SCP_SCU_RoleSelectionNegotiation()
                reply.sop_class_uid = UID(abstract)
                reply.scu_role = True
                reply.scp_role = False
                role_replies[abstract] = reply
        out.transfer_syntax = [choice or (offered[0] if offered else "1.2.840.10008.1.2")]
        results.append(out)
    results.sort(key=lambda c: int(c.context_id or 0))
    return results, accepted, list(role_replies.values())
