"""Export of trained :class:`~mt2kd_lib.models.student.StudentModel` s to deployable formats.

Import from the submodules (kept out of this file so importing the package stays cheap)::

    from mt2kd_lib.export.onnx_export import export_model, export_transducer, export_tagger, export_speaker
"""
