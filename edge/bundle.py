"""The model bundle contract: manifest.json and its calibration, as types, read and written here.

A bundle is a folder: manifest.json (shapes, calibration, preprocessing version, the sha256 of
every other file) and the .tflite models. `convert` writes a manifest through `write_manifest`;
the device reads it through `load_bundle`: one definition of the format both sides use.

    manifest = Manifest.new(input_size=(155, 220), embedding_size=128, calibration=UNCALIBRATED,
                            versions={...})
    write_manifest(folder, manifest)        # adds the checksums of the folder's files
    bundle = load_bundle(folder)            # checked; bundle.calibration.threshold, ...

Calibration carries the keys scoring reads as typed fields; the others a calibration may hold
(threshold_eer, refs, validation_eer, writers, ...) travel in `details`, so manifests written
before or after a key was added both load. Both types also read as mappings (`manifest["files"]`,
`calibration["threshold"]`) for the workstation's reports.
"""
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edge_verify.edge.choices import MODEL_FILES
from edge_verify.edge.errors import ModelError, OtherModelError
from edge_verify.edge.preprocess import PREPROCESS_VERSION

BUNDLE_FORMAT = "edge-verify-bundle/1"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Calibration(Mapping):
    """The operating point of a bundle (README "Scores"): a distance threshold, adapted to each
    user's reference spread with `alpha` around `reference_spread` but never past
    `threshold_max`; `threshold_one_reference` for a user with one reference. None: older
    bundles, which use `threshold` for one reference and do not cap the adaptation."""
    threshold: float
    alpha: float = 0.0
    reference_spread: float | None = None
    threshold_one_reference: float | None = None
    threshold_max: float | None = None
    details: dict = field(default_factory=dict, compare=False)  # keys scoring does not read

    SCORED = ("threshold", "alpha", "reference_spread", "threshold_one_reference", "threshold_max")

    @classmethod
    def of(cls, value) -> "Calibration":
        """`value` as a Calibration (a Calibration, or a calibration mapping as calibrate returns)."""
        return value if isinstance(value, Calibration) else cls.from_dict(value)

    @classmethod
    def from_dict(cls, data) -> "Calibration":
        """Raises KeyError (no threshold), TypeError or ValueError (a value that is no number)."""
        if not isinstance(data, Mapping):
            raise TypeError("calibration is not an object")

        def number(key):
            value = data.get(key)
            return None if value is None else float(value)

        return cls(threshold=float(data["threshold"]), alpha=number("alpha") or 0.0,
                   reference_spread=number("reference_spread"),
                   threshold_one_reference=number("threshold_one_reference"),
                   threshold_max=number("threshold_max"),
                   details={k: v for k, v in data.items() if k not in cls.SCORED})

    def to_dict(self) -> dict:
        scored = {key: getattr(self, key) for key in self.SCORED}
        return {**{k: v for k, v in scored.items() if v is not None}, **self.details}

    def __getitem__(self, key):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self):
        return len(self.to_dict())


# A bundle before calibration (convert's first manifest; evaluating a tower): nothing adapts.
UNCALIBRATED = Calibration(threshold=1.0, alpha=0.0, reference_spread=0.0)




class Manifest(Mapping):
    """manifest.json, checked: typed attributes for what the device reads, the document for the rest."""

    def __init__(self, document: Mapping, where="manifest"):
        """ModelError (naming `where`) unless `document` is a complete edge-verify manifest."""
        if not isinstance(document, Mapping) or document.get("format") != BUNDLE_FORMAT:
            found = document.get("format") if isinstance(document, Mapping) else None
            raise ModelError(f"{where}: not an edge-verify model bundle "
                             f"(format {found!r}, expected {BUNDLE_FORMAT!r})")
        try:
            self.input_size = (int(document["input"]["height"]), int(document["input"]["width"]))
            self.embedding_size = int(document["output"]["embedding_size"])
            self.calibration = Calibration.of(document["calibration"])
            self.files = document.get("files", {})  # none yet in a manifest being written
            self.preprocess_version = document["preprocess_version"]
        except (KeyError, TypeError, ValueError, OverflowError) as error:  # OverflowError: int(Infinity)
            raise ModelError(f"{where}: incomplete manifest ({error!s} missing or invalid)") from None
        self._document = {**document, "calibration": self.calibration.to_dict()}

    @classmethod
    def new(cls, *, input_size: tuple[int, int], embedding_size: int, calibration: Calibration,
            preprocess_version: str = PREPROCESS_VERSION, **details) -> "Manifest":
        """A manifest for a new bundle (no files listed yet: write_manifest adds them)."""
        height, width = input_size
        return cls({"format": BUNDLE_FORMAT,
                    "input": {"height": int(height), "width": int(width), "channels": 1},
                    "output": {"embedding_size": int(embedding_size)},
                    "preprocess_version": preprocess_version,
                    "calibration": calibration.to_dict(), **details})

    def replace(self, **changes) -> "Manifest":
        """A copy with some top-level entries changed (`calibration` may be a Calibration)."""
        if isinstance(changes.get("calibration"), Calibration):
            changes["calibration"] = changes["calibration"].to_dict()
        return Manifest({**self._document, **changes})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self._document))  # a deep copy: a Manifest never changes

    def to_json(self) -> str:
        return json.dumps(self._document, indent=2) + "\n"

    def __getitem__(self, key):
        return self._document[key]

    def __iter__(self):
        return iter(self._document)

    def __len__(self):
        return len(self._document)


def write_manifest(folder, manifest: Manifest | Mapping) -> Manifest:
    """Write `folder`/manifest.json: `manifest` with the sha256 of every other file in the folder."""
    folder = Path(folder)
    manifest = manifest if isinstance(manifest, Manifest) else Manifest(manifest)
    files = {p.name: sha256_of(p) for p in sorted(folder.iterdir()) if p.name != MANIFEST and p.is_file()}
    manifest = manifest.replace(files=files)
    (folder / MANIFEST).write_text(manifest.to_json())
    return manifest


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A model bundle whose manifest has been read and checked (models not loaded yet)."""
    path: Path
    manifest: Manifest
    fingerprint: str        # sha256 of manifest.json: pins every file of the bundle

    @property
    def input_size(self) -> tuple[int, int]:
        return self.manifest.input_size

    @property
    def embedding_size(self) -> int:
        return self.manifest.embedding_size

    @property
    def calibration(self) -> Calibration:
        return self.manifest.calibration

    @property
    def preprocess_version(self) -> str:
        return self.manifest.preprocess_version

    def made(self, fingerprint, preprocess_version) -> bool:
        """Whether embeddings stamped with this fingerprint and preprocessing came from this bundle
        (only those can be compared with its embeddings)."""
        return fingerprint == self.fingerprint and preprocess_version == self.preprocess_version

    def require_made(self, user: str, fingerprint: str, preprocess_version: str) -> None:
        """ModelError unless a user's embeddings were made by this bundle and preprocessing."""
        if not self.made(fingerprint, preprocess_version):
            raise OtherModelError(user, fingerprint, self.fingerprint)

    def read_file(self, name: str) -> bytes:
        """The bytes of a bundle file, refused unless they match the manifest's sha256."""
        expected = self.manifest.files.get(name)
        if expected is None:
            raise ModelError(f"{self.path}: the manifest does not list {name}")
        try:
            content = (self.path / name).read_bytes()
        except FileNotFoundError:
            raise ModelError(f"{self.path / name} is missing from the bundle") from None
        except OSError as error:
            raise ModelError(f"cannot read {self.path / name}: {error.strerror or error}") from None
        if hashlib.sha256(content).hexdigest() != expected:
            raise ModelError(f"{self.path / name} does not match the checksum in its manifest: "
                             "the bundle is damaged or was tampered with")
        return content


def default_bundle_dir() -> Path:
    """The bundle shipped inside the package (edge/models/default)."""
    return Path(str(resources.files("edge_verify.edge") / "models" / "default"))


def load_bundle(path=None) -> Bundle:
    """Read and check a bundle's manifest; ModelError if it is missing, invalid or of the wrong kind."""
    folder = Path(path) if path is not None else default_bundle_dir()
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        raise ModelError(f"model bundle {folder} not found" + (
            " (the default model is not installed)" if path is None else ""))
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{folder} is not a model bundle: it has no {MANIFEST}") from None
    except OSError as error:
        raise ModelError(f"cannot read {manifest_path}: {error.strerror or error}") from None
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):  # also bad UTF-8, numbers over 4300 digits, nesting too deep
        raise ModelError(f"{manifest_path} is damaged: not valid JSON") from None
    manifest = Manifest(document, manifest_path)
    if "files" not in document:
        raise ModelError(f"{manifest_path}: incomplete manifest ('files' missing or invalid)")
    if not isinstance(manifest.files, dict) or MODEL_FILES["int8"] not in manifest.files:
        raise ModelError(f"{manifest_path}: the manifest lists no {MODEL_FILES['int8']}")
    if manifest.preprocess_version != PREPROCESS_VERSION:
        raise ModelError(f"{manifest_path}: the model expects preprocessing {manifest.preprocess_version!r} "
                         f"but this edge-verify does {PREPROCESS_VERSION!r}; use a bundle converted "
                         "for this version")
    return Bundle(folder, manifest, hashlib.sha256(raw).hexdigest())
