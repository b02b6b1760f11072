"""Preparation of the paper's real corpora (LibriSpeech, AudioSet, VoxCeleb1/2, MUSAN) into contract CutSets.

Each module turns one corpus directory in its official layout into lhotse CutSets; the CLI
``local/prepare_librispeech_audioset_voxceleb.py`` sanitizes and writes them under the manifest contract
(:mod:`mt2kd_lib.data.contract`). Kept import-free so that importing the package stays cheap.
"""
