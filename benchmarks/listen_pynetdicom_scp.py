"""A minimal pynetdicom Storage SCP, as a benchmark contestant (not part of the package).

What ``dicom-repack listen`` would be if it used pynetdicom's own PDU path
(``AE.start_server`` + an EVT_C_STORE handler on ``event.encoded_dataset()``):
without ``--repack`` it only writes each data set (the issue's 195 instances/s
reference); with ``--repack`` it files each instance through the core's
``Repacker.repack_buffer``, as listen does. Kept to show, measured side by side,
why listen reads P-DATA itself.

    python benchmarks/listen_pynetdicom_scp.py --port P --out DIR [--repack --logdir L]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True, help="output folder (datadir with --repack)")
    p.add_argument("--repack", action="store_true")
    p.add_argument("--logdir")
    p.add_argument("--max-pdu", type=int, default=16382)
    args = p.parse_args(argv)

    from pydicom.uid import AllTransferSyntaxes
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.dimse_primitives import C_STORE

    from dicom_repack.core.repack import Config, Repacker

    os.makedirs(args.out, exist_ok=True)
    repacker = Repacker(Config(args.out, args.logdir)) if args.repack else None

    def handle_store(event: evt.Event) -> int:
        data = event.encoded_dataset()
        if repacker is not None:
            outcome = repacker.repack_buffer(data)
            return 0x0000 if outcome.error is None else 0xA700
        request = event.request
        assert isinstance(request, C_STORE)
        path = os.path.join(args.out, f"{request.AffectedSOPInstanceUID}.dcm")
        with open(path, "wb") as f:
            f.write(data)
        return 0x0000

    ae = AE(ae_title="PYNETDICOM")
    ae.maximum_pdu_size = args.max_pdu
    ae.maximum_associations = 16
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        ae.add_supported_context(cx.abstract_syntax, AllTransferSyntaxes)
    ae.add_supported_context("1.2.840.10008.1.1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ae.start_server(
        ("127.0.0.1", args.port), block=True, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
