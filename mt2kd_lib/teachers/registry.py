"""Build teachers by kind, and all teachers of a recipe from its yaml config.

Config layout (paths are used as written, i.e. relative to the directory the stage runs in)::

    teachers:
      whisper: {kind: whisper, checkpoint: download/whisper/large-v3.pt, layer: -1, dim: 1280}
      beats:   {kind: beats, checkpoint: download/beats/BEATs_iter3_plus_AS2M_finetuned.pt, dim: 527}
      ecapa:   {kind: ecapa, checkpoint: download/ecapa/embedding_model.ckpt, dim: 192}
      icefall: {kind: icefall_zipformer, checkpoint: download/icefall/exp/pretrained.pt}  # teachers/icefall_teacher.py

``kind`` defaults to the teacher's name; ``dim`` is optional and, when given, must equal the built teacher's
``spec.dim``. Every other key is passed to the teacher's constructor; the teacher's name is passed as ``name`` when
its constructor takes one.
"""

import importlib
import inspect
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import yaml

from mt2kd_lib.teachers.base import Teacher

# kind -> (module, class); modules are imported only when that kind is built.
KINDS: Dict[str, Tuple[str, str]] = {
    "whisper": ("mt2kd_lib.teachers.whisper", "WhisperTeacher"),
    "beats": ("mt2kd_lib.teachers.beats", "BeatsTeacher"),
    "ecapa": ("mt2kd_lib.teachers.ecapa", "EcapaTeacher"),
    "onnx": ("mt2kd_lib.teachers.onnx_teacher", "OnnxTeacher"),
    "resemblyzer": ("mt2kd_lib.teachers.resemblyzer_teacher", "ResemblyzerTeacher"),
    "checkpoint": ("mt2kd_lib.teachers.checkpoint", "CheckpointTeacher"),
    "icefall_zipformer": ("mt2kd_lib.teachers.icefall_teacher", "IcefallZipformerTeacher"),
}


def teacher_class(kind: str) -> type:
    """The Teacher subclass for ``kind`` (imported lazily)."""
    if kind not in KINDS:
        raise ValueError(f"unknown teacher kind {kind!r}; known kinds: {sorted(KINDS)}")
    module_name, class_name = KINDS[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"teacher kind {kind!r} needs module {module_name}, which cannot be imported: {e}") from e
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ImportError(f"teacher kind {kind!r}: module {module_name} has no class {class_name}")
    return cls


def build_teacher(name_or_kind: str, **kwargs: Any) -> Teacher:
    """Build a teacher of kind ``kwargs.pop('kind', name_or_kind)``; ``name_or_kind`` also names it."""
    kind = kwargs.pop("kind", name_or_kind)
    cls = teacher_class(kind)
    params = inspect.signature(cls.__init__).parameters
    if "name" in params and "name" not in kwargs:
        kwargs["name"] = name_or_kind
    try:
        teacher = cls(**kwargs)
    except TypeError as e:
        raise TypeError(f"teacher {name_or_kind!r} (kind {kind}): bad arguments {sorted(kwargs)}: {e}") from e
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher {name_or_kind!r}: {cls.__name__} is not a Teacher")
    return teacher


def read_teachers_config(yaml_path: Union[str, Path]) -> Dict[str, Dict[str, Any]]:
    """The one parser of a teachers yaml (stage 4 selection, stage 5 dump): ``{name: entry}`` under ``teachers:``.

    Raises naming the file when it is missing, has no non-empty ``teachers:`` mapping, or an entry is no mapping.
    """
    path = Path(yaml_path)
    if not path.is_file():
        raise FileNotFoundError(f"teachers config {path} does not exist")
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("teachers"), dict) or not cfg["teachers"]:
        raise ValueError(f"teachers config {path}: expected a non-empty mapping under 'teachers:'")
    for name, entry in cfg["teachers"].items():
        if not isinstance(entry, dict):
            raise ValueError(f"teachers config {path}: entry {name!r} must be a mapping, got {entry!r}")
    return cfg["teachers"]


def teacher_entry(name: str, entry: Dict[str, Any]) -> Tuple[str, Dict[str, Any], Optional[int]]:
    """``(kind, constructor kwargs, declared dim)`` of one entry: ``kind`` defaults to the name; ``dim`` is
    checked against the built teacher (the ONNX teacher also gets it, to check against its model)."""
    kwargs = dict(entry)
    expected_dim = kwargs.pop("dim", None)
    kind = kwargs.pop("kind", name)
    for key in ("target", "num_codebooks"):  # how the dump stores frames (teachers/mvq.py), not the model's
        kwargs.pop(key, None)
    if kind == "onnx" and expected_dim is not None:
        kwargs["dim"] = expected_dim
    return kind, kwargs, None if expected_dim is None else int(expected_dim)


def check_dim(teacher: Teacher, expected_dim: Optional[int], where: str) -> Teacher:
    if expected_dim is not None and expected_dim != teacher.spec.dim:
        raise ValueError(f"{where} declares dim {expected_dim} but the loaded model gives dim {teacher.spec.dim}")
    return teacher


def load_teachers_config(
    yaml_path: Union[str, Path], device: Optional[str] = None, only: Optional[list] = None
) -> Dict[str, Teacher]:
    """Build every teacher under ``teachers:`` of ``yaml_path`` (or those named in ``only``).

    ``device`` overrides each entry's ``device``. A declared ``dim`` that differs from the teacher's is an error.
    """
    path = Path(yaml_path)
    entries = read_teachers_config(path)
    if only is not None:
        unknown = sorted(set(only) - set(entries))
        if unknown:
            raise ValueError(f"teachers config {path}: no teacher(s) {unknown}; it has {sorted(entries)}")
    teachers: Dict[str, Teacher] = {}
    for name, entry in entries.items():
        if only is not None and name not in only:
            continue
        kind, kwargs, expected_dim = teacher_entry(name, entry)
        if device is not None:
            kwargs["device"] = device
        teachers[name] = check_dim(build_teacher(name, kind=kind, **kwargs), expected_dim,
                                   f"teachers config {path}: teacher {name!r}")
    return teachers
