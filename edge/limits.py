"""Every size cap on what edge-verify reads: the one place they are defined.

A device must not be made to read, decode or keep without bound: an input over a cap is refused
with a one-line error (exit 2) before the work starts. The README ("What is refused") lists them.
"""

# Images (files, bytes, camera frames)
MAX_IMAGE_BYTES = 100_000_000        # an image file; a 300 dpi A4 scan is a few MB
MAX_PIXELS = 50_000_000              # a 48 Mpixel phone photo fits; camera frames too
MAX_SIDE = 20_000                    # pixels a side
MAX_DECODED_BYTES = 150_000_000      # decoded pixels (width x height x channels x bytes a sample): a
                                     # 50 Mpixel colour JPEG fits; a 16-bit colour PNG up to 25 Mpixel

# Export files (import reads them whole)
MAX_EXPORT_BYTES = 256_000_000       # 50,000 users with 5 references of a 128-d model fit
MAX_TEXT_FIELD = 200                 # characters of a reference's source and of a time stamp

# Pen strokes (a file, standard input or a serial pad)
MAX_STROKE_BYTES = 10_000_000        # a whole recording
MAX_LINE = 4_096                     # one line: a pen sample (JSON lines or CSV), or Enter at a prompt

# Names
MAX_NAME_LENGTH = 100                # characters of a user name
SHOWN_NAME_LENGTH = 60               # characters of a name (or path) quoted in a message
