"""Transducer (pruned RNN-T) ASR head: stateless decoder, joiner and :class:`TransducerHead`.

Import from the submodules (kept out of this file so importing the package stays cheap)::

    from mt2kd_lib.models.transducer.transducer import TransducerHead, TransducerLosses
    from mt2kd_lib.models.transducer.decoder import Decoder
    from mt2kd_lib.models.transducer.joiner import Joiner
"""
