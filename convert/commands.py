"""CLI command of the converter workstation: convert. TensorFlow is imported only when it runs."""
import click

from edge_verify.training.commands import need_tensorflow
from edge_verify.training.datasets import LAYOUTS


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Trained tower, e.g. RUN_DIR/tower.keras.")
@click.option("--calib", "calib_dirs", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder: its training writers calibrate int8, its validation writers check it. Repeatable.")
@click.option("--layout", "layouts", multiple=True, type=click.Choice(LAYOUTS), help="One per --calib; detected when omitted.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--float16", is_flag=True, help="Also write model_float16.tflite.")
@click.option("--no-onnx", is_flag=True, help="Skip the ONNX export for Jetson.")
@click.option("--force", is_flag=True, help="Keep the bundle even when the accuracy guard fails.")
def convert(model_path, calib_dirs, layouts, out_dir, float16, no_onnx, force):
    """Turn a trained tower into a device model bundle (needs edge-verify[train])."""
    need_tensorflow()
    if layouts and len(layouts) != len(calib_dirs):
        raise click.BadParameter("give one --layout per --calib, or none", param_hint="--layout")
    from edge_verify.convert.convert import AccuracyGuardError, convert as run_conversion

    calib = list(zip(calib_dirs, layouts or [None] * len(calib_dirs)))
    try:
        manifest = run_conversion(model_path, calib, out_dir, float16=float16, force=force, onnx=not no_onnx)
    except AccuracyGuardError as error:
        raise click.ClickException(str(error)) from None
    guard = manifest["accuracy_guard"]
    click.echo(f"bundle written to {out_dir}: median cosine int8/float {guard['median_cosine']:.4f}, "
               f"validation EER float {100 * guard['eer_float32']:.2f} % / int8 {100 * guard['eer_int8']:.2f} %, "
               f"threshold {manifest['calibration']['threshold']:.3f}; Edge TPU compatible: "
               f"{manifest['edgetpu']['compatible']}")
