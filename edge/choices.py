"""The names a device setting may take, each defined once: the CLI's options, the device
profiles' schema, the runtime and the capture code all read them from here.

No imports: the CLI builds its options from these at start-up, and `edge-verify --help` must not
load numpy, OpenCV or a runtime.
"""

DELEGATES = ("none", "edgetpu")    # where the model runs: the CPU, or a Coral Edge TPU
EDGETPU = "edgetpu"
MODEL_FILES = {  # model variant -> its file in a bundle
    "int8": "model_int8.tflite",
    "float32": "model_float32.tflite",
    "float16": "model_float16.tflite",
    EDGETPU: "model_int8_edgetpu.tflite",
}
VARIANTS = tuple(MODEL_FILES)
# backend name (as in device profiles) -> module holding Interpreter and load_delegate
BACKEND_MODULES = {
    "litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow",  # tensorflow.lite.Interpreter, a last resort
}
BACKENDS = tuple(BACKEND_MODULES)
SOURCES = ("file", "camera", "pad")  # where a signature comes from (--from, [capture] source)
