"""The `edge-verify` command line: a thin wrapper around the public functions of edge_verify.edge.

Exit codes: 0 match / ok, 1 no match, 2 error (one line on stderr: "error: ...").
Workstation commands (train, convert, evaluate, ...) are not part of this package: they are
registered under the entry-point group COMMAND_GROUP (pyproject.toml) and imported only when
named. Device commands import numpy, OpenCV and the TFLite runtime only when they run, so
`edge-verify --help` stays instant.

Settings: a value given on the command line (or its EDGE_VERIFY_* environment variable) wins; a
device profile may supply the others, either through click's ctx.default_map (keys "model",
"db", "threads", "delegate", and "check": {"threshold": ...}) or with Settings.with_defaults();
what is left comes from the defaults (the packaged model, the user's data folder, the CPU).
"""
import json
import os
import sys
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import click

from edge_verify.edge.choices import DELEGATES, SOURCES
from edge_verify.edge.errors import EdgeVerifyError, shown

# OpenCV would print "[ WARN:0] ... input buffer is incomplete" next to our one-line error.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

# Options of the whole program, each with a value; accepted after the command too, as users type them.
GLOBAL_OPTIONS = ("--model", "--db", "--threads", "--delegate", "--profile")

EPILOG = """\b
Exit codes: 0 match / ok, 1 no match, 2 error (one line on stderr: "error: ...").
With --json every command prints one JSON document on stdout (README: "JSON shapes").
"""


@dataclass
class Settings:
    """What the device commands run with; None means "not given: use the default"."""
    model: str | None = None        # bundle folder; None: the packaged default model
    db: str | None = None           # store file; None: store.sqlite3 in the user's data folder
    threads: int | None = None      # interpreter threads; None: the runtime decides
    delegate: str | None = None     # "none" (CPU) or "edgetpu"; None: "none"
    variant: str | None = None      # model file: int8 (default), float32, float16, edgetpu
    backend: str | None = None      # "litert", "tflite_runtime", "tensorflow"; None: first installed
    _loaded: dict = field(default_factory=dict, repr=False)

    def with_defaults(self, **defaults) -> "Settings":
        """A copy where each setting still None takes the value in `defaults` (e.g. from a profile)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_loaded"}
        for name, value in defaults.items():
            if name not in values:
                raise TypeError(f"unknown setting {name!r}")
            if values[name] is None:
                values[name] = value
        return Settings(**values)

    def bundle(self):
        """The model bundle's manifest (checked), without loading the interpreter."""
        if "bundle" not in self._loaded:
            from edge_verify.edge.bundle import load_bundle
            self._loaded["bundle"] = load_bundle(self.model)
        return self._loaded["bundle"]

    def load_model(self):
        if "model" not in self._loaded:
            from edge_verify.edge.inference import load_model
            self._loaded["model"] = load_model(self.model, threads=self.threads,
                                               delegate=self.delegate or "none",
                                               variant=self.variant, backend=self.backend)
        return self._loaded["model"]

    def store_path(self) -> Path:
        from edge_verify.edge.store import store_path
        return store_path(self.db)

    def store(self, create: bool = False):
        """The open store; a missing one is an error unless `create` (enrolment and import)."""
        if "store" not in self._loaded:
            from edge_verify.edge.api import open_store
            store = open_store(self.db, create=create)
            self._loaded["store"] = store
            click.get_current_context().call_on_close(store.close)
        return self._loaded["store"]


class _Failure(click.ClickException):
    """An EdgeVerifyError as the CLI shows it: 'error: ...' on stderr, exit code 2."""
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.message}", err=True)


class _UsageFailure(click.UsageError):
    """A usage mistake as one line too: 'error: ... (see --help)', exit code 2."""

    def show(self, file=None):
        command = self.ctx.command_path if self.ctx is not None else "edge-verify"
        click.echo(f"error: {self.format_message()} (see {command} --help)", err=True)


def place_options(args: list[str], commands) -> list[str]:
    """The command line with global options given after a device command moved before it, and
    --json given before the command moved after it. Other commands' options stay as they are."""
    end = args.index("--") if "--" in args else len(args)
    front, rest, command, as_json, i = [], [], None, False, 0
    while i < end:
        arg = args[i]
        if arg.split("=", 1)[0] in GLOBAL_OPTIONS:
            width = 1 if "=" in arg else 2
            front += args[i:i + width]
            i += width
            continue
        if command is None and arg == "--json":
            as_json = True
        elif command is None and not arg.startswith("-"):
            command = arg
            rest.append(arg)
        else:
            (front if command is None else rest).append(arg)
        i += 1
    if command not in commands:
        return list(args)
    return front + rest + (["--json"] if as_json else []) + list(args[end:])


@contextmanager
def _native_stderr_silenced():
    """Native libraries (libpng, FFmpeg, TFLite) write warnings straight to file descriptor 2,
    which would add lines beside our one-line error. While the command runs, fd 2 goes to
    /dev/null and Python's sys.stderr to a copy of the real one. Nothing changes when sys.stderr
    is not fd 2 (e.g. under click's CliRunner)."""
    try:
        real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved, python_stderr = os.dup(2), sys.stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    sys.stderr = open(saved, "w", encoding=python_stderr.encoding, errors="backslashreplace",
                      buffering=1, closefd=False)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        sys.stderr.close()
        sys.stderr = python_stderr
        os.close(saved)
        os.close(devnull)


# Commands from outside the device package (the workstation's train, convert, evaluate, ...):
# whoever provides one registers it under this entry-point group. A device command never looks
# them up; one is imported only when named (click's "lazily loading subcommands" pattern).
COMMAND_GROUP = "edge_verify.commands"


def registered_commands() -> dict:
    """{name: entry point} of the commands registered under COMMAND_GROUP, not imported."""
    from importlib.metadata import entry_points
    return {point.name: point for point in entry_points(group=COMMAND_GROUP)}


class _Group(click.Group):
    """Turns errors into exit code 2 (known ones into one line) and runtime warnings into 'warning: ...'.
    Loads a registered (workstation) command when it is named."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *registered_commands()})

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None and name in (registered := registered_commands()):
            command = registered[name].load()
        return command

    def format_commands(self, ctx, formatter):
        """The device commands with their one-line help, then the registered ones by name only:
        listing those must not import them."""
        device = [(name, command) for name, command in sorted(self.commands.items()) if not command.hidden]
        limit = formatter.width - 6 - max(len(name) for name, _ in device)
        with formatter.section("Commands"):
            formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in device])
        others = sorted(set(registered_commands()) - set(self.commands))
        if others:
            with formatter.section("Workstation commands (edge-verify[train]; COMMAND --help for each)"):
                formatter.write_text(", ".join(others))

    def main(self, *args, **kwargs):
        with _native_stderr_silenced():
            return super().main(*args, **kwargs)

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, place_options(list(args), self.commands))
        except click.UsageError as error:
            raise _UsageFailure(error.format_message(), error.ctx) from None

    def invoke(self, ctx):
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except EdgeVerifyError as error:
                raise _Failure(str(error)) from None
            except click.UsageError as error:
                raise _UsageFailure(error.format_message(), error.ctx) from None
            except (KeyboardInterrupt, click.Abort):
                raise _Failure("interrupted") from None
            except (_Failure, _UsageFailure):
                raise
            except click.ClickException as error:  # any command's own, e.g. a workstation command's:
                raise _Failure(error.format_message()) from None  # one "error:" line, exit 2 (never 1)
            except click.exceptions.Exit:
                raise
            except Exception as error:  # a bug: show where, but still exit 2, never 1 ("no match")
                traceback.print_exc()
                raise _Failure(f"unexpected {type(error).__name__}: {error} (a bug in edge-verify; "
                               "the traceback above shows where)") from None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    from edge_verify.edge.inference import RuntimeFallbackWarning
    if issubclass(category, RuntimeFallbackWarning):
        click.echo(f"warning: {message}", err=True)
    # other warnings (numpy, libraries) are for developers: they would break "one line on stderr"


def json_option(command):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document on stdout instead of text.")(command)


def _emit(as_json: bool, data, text: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else text)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name="edge-verify")
@click.option("--model", metavar="BUNDLE_DIR", envvar="EDGE_VERIFY_MODEL",
              help="Model bundle folder [default: the model shipped with edge-verify].")
@click.option("--db", metavar="PATH", envvar="EDGE_VERIFY_DB",
              help="Store file [default: store.sqlite3 in the user's data folder].")
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads.")
@click.option("--delegate", type=click.Choice(DELEGATES),
              help="Run on the CPU (none) or a Coral Edge TPU (falls back to the CPU with a warning).")
@click.option("--profile", metavar="NAME|PATH", envvar="EDGE_VERIFY_PROFILE",
              help="Device profile from firmware_configs (e.g. rpi5-coral-usb) or a TOML file; "
                   "it supplies every setting the command line does not.")
@click.pass_context
def main(ctx, model, db, threads, delegate, profile):
    """Offline handwritten-signature verification on the device."""
    if ctx.resilient_parsing or ctx.invoked_subcommand not in ctx.command.commands:  # a registered one
        ctx.obj = Settings(model=model, db=db, threads=threads, delegate=delegate)
        return
    ctx.obj = settings_from_profile(Settings(model=model, db=db, threads=threads, delegate=delegate),
                                    profile, ctx)


def settings_from_profile(settings: "Settings", name, ctx) -> "Settings":
    """Fill what the command line left open from the device profile (or the defaults)."""
    from edge_verify.edge.profiles import load_profile
    from edge_verify.edge.store import default_path

    try:
        profile = load_profile(name)
    except EdgeVerifyError as error:
        raise _Failure(str(error)) from None
    runtime = profile["runtime"]
    ctx.meta["profile"] = profile
    ctx.meta["profile_name"] = name or "default"
    return settings.with_defaults(
        model=None if runtime["model"] == "default" else str(runtime["model"]),
        db=str(default_path(profile["store"]["data_dir"])),
        threads=runtime["threads"], delegate=runtime["delegate"],
        variant=runtime["variant"], backend=runtime["backend"])


def profile_threshold(threshold):
    """--threshold, else the profile's [verify] threshold when it is a number."""
    if threshold is not None:
        return threshold
    configured = click.get_current_context().meta["profile"]["verify"]["threshold"]
    return None if configured == "calibrated" else float(configured)


def source_option(command):
    return click.option("--from", "source", type=click.Choice(SOURCES), default=None,
                        help="Where signatures come from [default: the profile's capture source, "
                             "else file]. camera: IMAGE may name a camera index or video file; "
                             "pad: IMAGE is a stroke file (JSON lines or CSV, '-' for stdin).")(command)


def captured(source, paths):
    """The images to score: the file paths as they are, or what the camera / pad delivers."""
    profile = click.get_current_context().meta["profile"]
    source = source or profile["capture"]["source"]
    if source == "file":
        return list(paths)
    from edge_verify.edge.capture import capture_image
    return [capture_image(source, profile["capture"], path=path) for path in (paths or [None])]


# ------------------------------------------------------------------ enroll


@main.command(epilog=EPILOG)
@click.argument("user", required=False)
@click.argument("images", nargs=-1, metavar="[IMAGE]...")
@click.option("--replace", is_flag=True, help="Drop the user's references and enrol them anew.")
@click.option("--append", is_flag=True, help="Add references to an enrolled user.")
@click.option("--from-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Enrol many users: DIR holds one subfolder per user, named after the user, "
                   "with that user's reference images.")
@source_option
@json_option
@click.pass_obj
def enroll(settings, user, images, replace, append, from_dir, source, as_json):
    """Enrol USER with 1 to N reference signatures (3 to 5 recommended).

    Refuses blank or unreadable images and references that repeat another one, and reports
    how consistent the set is: its spread and any reference that does not match the others.
    The user is either fully enrolled or left as before.
    """
    if replace and append:
        raise click.UsageError("--replace and --append exclude each other")
    mode = "replace" if replace else "append" if append else "new"
    if from_dir is not None:
        if user or images:
            raise click.UsageError("give either USER IMAGE... or --from-dir DIR, not both")
        return _enroll_folder(settings, from_dir, mode, as_json)
    if not user or (not images and (source or "file") == "file"):
        raise click.UsageError("give a USER and at least one IMAGE (or --from-dir DIR)")
    from edge_verify.edge import api
    result = api.enroll(settings.load_model(), settings.store(create=True), user, captured(source, images),
                        mode=mode, source=source or "file")
    _emit(as_json, result.to_dict(), _enrolment_text(result))


def _enroll_folder(settings, folder: Path, mode: str, as_json: bool):
    from edge_verify.edge import api
    users = api.user_folders(folder)
    model, store = settings.load_model(), settings.store(create=True)
    if sys.stderr.isatty():  # no progress line in a log
        with click.progressbar(length=len(users), label="Enrolling", file=sys.stderr,
                               item_show_func=lambda name: shown(name) if name else "") as bar:
            result = api.enroll_folder(model, store, folder, mode=mode,
                                       progress=lambda name: bar.update(1, name))
    else:
        result = api.enroll_folder(model, store, folder, mode=mode)
    lines = [f"enrolled {shown(r.user)}: {_count(r.references, 'reference')}, spread "
             f"{_number(r.spread)}, {_count(len(r.outliers), 'outlier')}" for r in result.enrolled]
    lines.append(f"{_count(len(result.enrolled), 'user')} enrolled, {len(result.failed)} failed")
    _emit(as_json, result.to_dict(), "\n".join(lines))
    for failure in result.failed:  # one error line per user that failed
        click.echo(f"error: {shown(failure['user'])}: {failure['error']}", err=True)
    if result.failed:
        click.get_current_context().exit(2)


def _enrolment_text(result) -> str:
    lines = [f"enrolled {result.user}: {_count(result.added, 'reference')} added, {result.references} in all"
             + {"new": "", "replace": " (replaced)", "append": " (appended)"}[result.mode]]
    if result.spread is None:
        lines.append("consistency: one reference, no spread to measure (3 to 5 references make "
                     "checks more reliable)")
    else:
        typical = f" (typical {result.typical_spread:.3f})" if result.typical_spread is not None else ""
        lines.append(f"consistency: spread {result.spread:.3f}{typical}; checks will use "
                     f"distance threshold {result.threshold:.3f}")
    for outlier in result.outliers:
        lines.append(f"outlier: {outlier['reference']} does not match the other references "
                     f"(distance {outlier['distance']:.3f} > {outlier['threshold']:.3f}); "
                     "consider replacing it")
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


# ------------------------------------------------------------------ check / identify


def _distance(ctx, param, value):
    """--threshold: a finite distance in 0..2 (NaN is refused too)."""
    if value is None:
        return None
    from edge_verify.edge.scoring import checked_threshold
    try:
        return checked_threshold(value)
    except EdgeVerifyError as error:
        raise click.BadParameter(str(error)) from None


def no_lockout_option(command):
    return click.option("--no-lockout", is_flag=True,
                        help="Count no failed attempts in this run (an operator's batch evaluation); "
                             "users locked already stay locked.")(command)


def lockout_settings(no_lockout: bool) -> dict:
    """max_failed and lockout_seconds from the profile; --no-lockout counts no failures (0)."""
    security = click.get_current_context().meta["profile"]["security"]
    return {"max_failed": 0 if no_lockout else security["max_failed_checks"],
            "lockout_seconds": security["lockout_seconds"]}


@main.command(epilog=EPILOG)
@click.argument("user")
@click.argument("image", required=False)
@click.option("--threshold", callback=_distance, metavar="DISTANCE",
              help="Distance threshold (0..2) instead of the calibrated one adapted to the user.")
@no_lockout_option
@source_option
@json_option
@click.pass_obj
def check(settings, user, image, threshold, no_lockout, source, as_json):
    """Verify IMAGE against USER's references: MATCH (exit 0) or NO MATCH (exit 1).

    Prints the similarity (0..1), the distance to the references and the threshold used: the
    model's calibrated threshold adapted to the spread of the user's references, or --threshold.
    After the profile's max_failed_checks failures in a row the user is locked out for
    lockout_seconds (exit 2) unless an operator runs `users unlock USER`.
    """
    if image is None and (source or "file") == "file":
        raise click.UsageError("give the IMAGE to check (or --from camera|pad)")
    from edge_verify.edge import api
    [image] = captured(source, [image] if image else [])
    result = api.check(settings.load_model(), settings.store(), user, image,
                       threshold=profile_threshold(threshold), **lockout_settings(no_lockout))
    relation = "<=" if result.match else ">"
    _emit(as_json, result.to_dict(),
          f"{'MATCH' if result.match else 'NO MATCH'}: {result.user}  similarity {result.similarity:.3f}  "
          f"distance {result.distance:.3f} {relation} threshold {result.threshold:.3f} ({result.threshold_source})")
    click.get_current_context().exit(0 if result.match else 1)


@main.command(epilog=EPILOG)
@click.argument("image")
@click.option("-k", "--top", default=5, show_default=True, type=click.IntRange(min=1),
              help="How many users to list.")
@no_lockout_option
@json_option
@click.pass_obj
def identify(settings, image, top, no_lockout, as_json):
    """Find the enrolled users whose signatures are most like IMAGE (1:N search).

    Exit 0 when the best candidate passes its threshold, 1 when nobody does. A locked-out user
    never matches. The search counts as a check of the best candidate for the lockout: no match
    is one failed attempt, a match resets their failures.
    """
    from edge_verify.edge import api
    candidates = api.identify(settings.load_model(), settings.store(), image, top,
                              **lockout_settings(no_lockout))
    width = max(len(c.user) for c in candidates)
    lines = [f"{rank:>2}. {c.user:<{width}}  similarity {c.similarity:.3f}  distance {c.distance:.3f}  "
             f"{'MATCH' if c.match else 'locked out' if c.locked else 'no match'} (threshold {c.threshold:.3f})"
             for rank, c in enumerate(candidates, start=1)]
    _emit(as_json, {"candidates": [c.to_dict() for c in candidates]}, "\n".join(lines))
    click.get_current_context().exit(0 if candidates[0].match else 1)


# ------------------------------------------------------------------ users


@main.group(epilog=EPILOG)
def users():
    """List, show, unlock or remove enrolled users."""


@users.command("list", epilog=EPILOG)
@json_option
@click.pass_obj
def users_list(settings, as_json):
    """List the enrolled users."""
    from edge_verify.edge import api
    rows = api.list_users(settings.store(), settings.bundle())
    width = max([len(r["name"]) for r in rows] + [4])
    lines = [f"{'USER':<{width}}  REFS  ENROLLED                   MODEL"]
    lines += [f"{r['name']:<{width}}  {r['references']:>4}  {r['created_at']:<25}  "
              f"{'current' if r['current_model'] else 'other model: re-enroll with --replace'}"
              for r in rows]
    lines.append(_count(len(rows), "user"))
    _emit(as_json, {"users": rows}, "\n".join(lines))


@users.command("show", epilog=EPILOG)
@click.argument("user")
@json_option
@click.pass_obj
def users_show(settings, user, as_json):
    """Show USER's references (source, image hash, time), spread and latest checks."""
    from edge_verify.edge import api
    details = api.show_user(settings.store(), user, settings.bundle())
    lines = [f"user: {details['name']}", f"enrolled: {details['created_at']} (updated {details['updated_at']})",
             f"model: {details['model_fingerprint'][:12]}"
             + ("" if details["current_model"] else " (other model: re-enroll with --replace)"),
             f"spread: {_number(details['spread'])}"]
    if "threshold" in details:
        lines.append(f"threshold: {details['threshold']:.3f}")
    lines.append(f"references: {len(details['references'])}")
    lines += [f"  {r['source']}  {r['image_sha256'][:12]}  {r['captured_at']}" for r in details["references"]]
    lines += [f"outlier: {o['reference']} (distance {o['distance']:.3f} > {o['threshold']:.3f})"
              for o in details.get("outliers", [])]
    if details["locked_until"]:
        lines.append(f"locked out until {details['locked_until']} (edge-verify users unlock USER lifts it)")
    elif details["failed_checks"]:
        lines.append(f"failed checks in a row: {details['failed_checks']}")
    if details["latest_checks"]:
        lines.append("latest checks:")
        lines += [f"  {c['checked_at']}  {c['kind']:<8}  {c['result']:<8}  similarity {_number(c['similarity'])}"
                  for c in details["latest_checks"]]
    _emit(as_json, details, "\n".join(lines))


@users.command("remove", epilog=EPILOG)
@click.argument("user")
@json_option
@click.pass_obj
def users_remove(settings, user, as_json):
    """Delete USER and their references (the audit log keeps its lines)."""
    from edge_verify.edge import api
    api.remove_user(settings.store(), user)
    _emit(as_json, {"removed": user}, f"removed {user}")


@users.command("unlock", epilog=EPILOG)
@click.argument("user")
@json_option
@click.pass_obj
def users_unlock(settings, user, as_json):
    """Lift USER's lockout after too many failed checks, and reset their count of failures."""
    from edge_verify.edge import api
    result = api.unlock_user(settings.store(), user)
    _emit(as_json, result, f"unlocked {result['user']}" if result["was_locked"]
          else f"{result['user']} was not locked; failed checks reset")


# ------------------------------------------------------------------ export / import / info


@main.command("export", epilog=EPILOG)
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--user", "names", multiple=True, metavar="USER", help="Export only this user (repeatable).")
@click.option("--plain", is_flag=True,
              help="Write the embeddings unencrypted even though the store has a key.")
@click.option("--overwrite", is_flag=True,
              help="Replace PATH if it is an existing file (never the store, nor a device or folder).")
@json_option
@click.pass_obj
def export_command(settings, path, names, plain, overwrite, as_json):
    """Write enrolments to PATH (JSON: embeddings, no images) to provision other devices.

    The file carries the model fingerprint and preprocessing version; `import` on a device
    with another model refuses it. Users enrolled with another model are skipped. When the
    store is encrypted (EDGE_VERIFY_KEY_FILE), the file is encrypted with the same key, and
    only a device with that key can import it; --plain writes the embeddings in the clear.
    PATH - writes the file to standard output (and nothing else there).
    """
    from edge_verify.edge import api
    store = settings.store()
    summary = api.export_enrolments(store, settings.bundle(), path, names or None, plain=plain,
                                    overwrite=overwrite)
    text = (f"exported {_count(summary['users'], 'user')} ({_count(summary['references'], 'reference')}) "
            f"to {path}")
    if summary["encryption"] != "none":
        text += f", encrypted with the store's key ({summary['encryption']})"
    elif store.encryption != "none":
        click.echo(f"warning: --plain: the embeddings in {path} are NOT encrypted; anyone with the "
                   "file can read them", err=True)
    if summary["skipped"]:
        text += f"\nskipped (enrolled with another model): {', '.join(summary['skipped'])}"
    if str(path) != api.STDOUT:  # on standard output the export is the only thing
        _emit(as_json, summary, text)


@main.command("import", epilog=EPILOG)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace users that are already enrolled.")
@json_option
@click.pass_obj
def import_command(settings, path, replace, as_json):
    """Add the users of an export file: all of them, or none on any error.

    An encrypted export needs the key it was made with (EDGE_VERIFY_KEY_FILE or EDGE_VERIFY_KEY).
    """
    from edge_verify.edge import api
    summary = api.import_enrolments(settings.store(create=True), settings.bundle(), path, replace=replace)
    _emit(as_json, summary, f"imported {_count(summary['users'], 'user')} "
                            f"({_count(summary['references'], 'reference')}) from {path}")


@main.command(epilog=EPILOG)
@json_option
@click.pass_obj
def info(settings, as_json):
    """Show the runtime, delegate, model bundle and store in use."""
    from edge_verify.edge import api
    path = settings.store_path()
    details = api.info(settings.load_model(), settings.store() if path.exists() else path)
    runtime, model, store = details["runtime"], details["model"], details["store"]
    text = "\n".join([
        f"runtime: {runtime['name']} {runtime['version']}, delegate {runtime['delegate']}, "
        f"threads {runtime['threads'] or 'auto'}, running {runtime['model_file']}",
        f"model: {model['path']}",
        f"  fingerprint {model['fingerprint'][:12]}, input {model['input'][0]}x{model['input'][1]}, "
        f"embedding {model['embedding_size']}, preprocessing {model['preprocess_version']}, "
        f"threshold {model['threshold']:.3f}",
        *_store_text(store),
    ])
    from edge_verify.edge.profiles import describe_profile
    meta = click.get_current_context().meta
    details["profile"] = {"name": meta["profile_name"], "settings": meta["profile"]}
    text += f"\nprofile: {meta['profile_name']}\n" + describe_profile(meta["profile"])
    _emit(as_json, details, text)


def _store_text(store: dict) -> list[str]:
    where = ("none yet: enroll or import creates it" if not store["exists"]
             else f"schema {store['schema']}" + (", read-only" if store["read_only"] else ""))
    return [f"store: {store['path']} ({where})",
            f"  encryption: {_encryption_text(store)}",
            f"  {store['users']} users, {store['references']} references, {store['checks']} checks logged"
            + (f", {store['users_other_model']} users enrolled with another model"
               if store["users_other_model"] else "")]


def _encryption_text(store: dict) -> str:
    encrypted, plain = store["encrypted_references"], store["references"] - store["encrypted_references"]
    if store["encryption"] == "none":
        text = ("none: references are stored unencrypted (set EDGE_VERIFY_KEY_FILE to a key file "
                "outside the store's folder to encrypt them)")
        return text + (f"; {encrypted} references are encrypted and cannot be read without the key"
                       if encrypted else "")
    text = f"aes-256-gcm ({encrypted} of {store['references']} references encrypted)"
    return text + (f"; {plain} enrolled before the key was set are unencrypted (re-enroll them "
                   "with --replace)" if plain else "")


from edge_verify.edge.serve_command import serve  # noqa: E402  (the service loads when it runs)

main.add_command(serve)


if __name__ == "__main__":
    main()
