"""Any model the project produces, as one function: preprocessed images -> unit embeddings.

- a bundle folder (default: the bundled model), run through the device runtime;
- a .tflite file inside a bundle folder (model_int8.tflite, model_float32.tflite, ...);
- a Keras tower (.keras);
- "hog": the non-learned floor (training/floor.py).
"""
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edge_verify.edge.inference import MODEL_FILES, default_bundle_dir, load_model


@dataclass
class Embedder:
    embed: Callable[[np.ndarray], np.ndarray]   # float32 (N, H, W, 1) -> (N, D) unit vectors
    input_size: tuple
    calibration: dict | None                    # the bundle's, None for a bare Keras model
    path: Path                                  # the model file that runs
    sha256: str


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_embedder(model=None, threads=2) -> Embedder:
    """`model`: a bundle folder, a .tflite in one, a .keras tower, or "hog" (the floor, training.floor)."""
    if model == "hog":
        from edge_verify.training.floor import floor_embedder

        return floor_embedder()
    path = Path(model) if model else default_bundle_dir()
    if path.suffix == ".keras":
        import keras

        tower = keras.saving.load_model(path, compile=False)
        embed = lambda images: np.asarray(tower.predict(images, batch_size=64, verbose=0))
        return Embedder(embed, tuple(tower.input_shape[1:3]), None, path, sha256_of(path))
    variant = "int8"
    if path.suffix == ".tflite":
        variant = {name: key for key, name in MODEL_FILES.items()}.get(path.name)
        if variant is None:
            raise ValueError(f"{path} is not one of the model files of a bundle ({', '.join(MODEL_FILES.values())})")
        path = path.parent
    device_model = load_model(path, variant=variant, threads=threads)
    embed = lambda images: np.stack([device_model.embed(image[..., 0]) for image in images])
    return Embedder(embed, device_model.input_size, device_model.bundle.calibration.to_dict(),
                    path / device_model.model_file, sha256_of(path / device_model.model_file))
