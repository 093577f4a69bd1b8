"""The converter: a trained tower -> a device model bundle (int8/float TFLite, ONNX, manifest).

Run it with `edge-verify convert`; see convert.convert.convert.
"""
