"""edge-verify on the device: enrol reference signatures, check a new one, identify a writer.

    from edge_verify.edge import load_model, open_store, enroll, check, identify

The names below are imported on first use, so `import edge_verify.edge.errors` (and the CLI's
--help) do not pay for numpy, OpenCV and the TFLite runtime.
"""
import importlib

_PUBLIC = {
    "load_model": "inference", "Model": "inference", "load_bundle": "bundle", "Bundle": "bundle",
    "open_store": "api", "embed_image": "api", "enroll": "api", "enroll_folder": "api", "check": "api",
    "identify": "api", "list_users": "api", "show_user": "api", "remove_user": "api", "unlock_user": "api",
    "info": "api", "Enrolment": "api", "FolderEnrolment": "api", "CheckResult": "api",
    "search": "ranking", "Candidate": "ranking",
    "export_enrolments": "transfer", "import_enrolments": "transfer",
    "UserLockedError": "errors", "Store": "store",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)


def __dir__():
    return sorted(list(globals()) + __all__)
