"""Measuring tools run from a checkout, beside the datasets: the device benchmark, the local
service's latency and the store stress test. They drive the device package (no TensorFlow) and
are not part of it.

    python -m edge_verify.tools.benchmark [--model BUNDLE_DIR] [--datasets DIR] [--quick]
    python -m edge_verify.tools.serve_bench [--quick]
    python -m edge_verify.tools.stress [--seconds 60]
"""
