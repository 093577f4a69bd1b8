"""CLI commands of the training workstation: train, evaluate, evaluate-omniglot.

TensorFlow is imported inside each command, never at module import, so the device CLI
stays light.
"""
import click

from edge_verify.training.choices import HEADS, OBJECTIVES, OUTPUT_STRIDES, TRAINING_DEFAULTS
from edge_verify.training.datasets import LAYOUTS


def need_tensorflow():
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "this command needs TensorFlow: pip install 'edge-verify[train]'") from None


def parse_size(ctx, param, text):
    """Click callback: "32x32" -> (32, 32); None stays None."""
    if text is None:
        return None
    try:
        height, width = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not HxW, e.g. 32x32", param_hint="--input-size") from None
    if min(height, width) < 16:
        raise click.BadParameter(f"{text!r}: each side needs at least 16 pixels", param_hint="--input-size")
    return height, width


@click.command()
@click.option("--data", "data_dirs", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder; repeat for several (their training writers are pooled). An Omniglot "
                   "folder (images_background.npz) trains alone, on the background characters.")
@click.option("--layout", "layouts", multiple=True, type=click.Choice(LAYOUTS),
              help="Layout of each --data, in order; detected when omitted.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--objective", type=click.Choice(OBJECTIVES), default=TRAINING_DEFAULTS.objective,
              show_default=True, help="cotuplet: MS-SigNet's soft-margin tuplet against the writer's skilled "
                                      "forgeries only; writer: writer classification alone (the cosine-softmax "
                                      "term at --writer-loss, or at 1 when that is 0), as SigNet pre-trains before a "
                                      "metric objective fine-tunes with --init-from.")
@click.option("--arch", type=click.Choice(["tower", "koch"]), default=TRAINING_DEFAULTS.arch, show_default=True,
              help="tower: the compact device network; koch: the Koch et al. baseline.")
@click.option("--head", type=click.Choice(HEADS), default=TRAINING_DEFAULTS.head, show_default=True,
              help="How the tower's last feature map becomes the embedding: global average pooling; "
                   "narrowed and flattened (keeps where the features are); or multiscale (MS-SigNet's: the "
                   "1/16 map times shallower ones, pooled whole and over 3 column and 3 row strips).")
@click.option("--output-stride", type=click.Choice([str(stride) for stride in OUTPUT_STRIDES]),
              default=str(TRAINING_DEFAULTS.output_stride),
              show_default=True, callback=lambda ctx, param, value: int(value),
              help="How many input pixels a side one cell of the tower's last map covers (16: a finer grid "
                   "for the flatten head, the last block without its stride).")
@click.option("--width-multiplier", type=click.FloatRange(0.25, 2.0),
              default=TRAINING_DEFAULTS.width_multiplier, show_default=True,
              help="Multiplies the filters of every layer of the tower (1.5: about twice the parameters).")
@click.option("--dropout", type=click.FloatRange(0.0, 0.9), default=TRAINING_DEFAULTS.dropout, show_default=True,
              help="Rate at which training drops the features that feed the embedding layer (regularises; "
                   "the device never drops any).")
@click.option("--ema", type=click.FloatRange(0.0, 1.0, max_open=True), default=TRAINING_DEFAULTS.ema, show_default=True,
              help="Keep and score the exponential moving average of the weights with this momentum "
                   "(e.g. 0.995: about the last 200 steps) instead of the last step's; 0: off.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=TRAINING_DEFAULTS.weight_decay, show_default=True,
              help="Each step shrinks the kernels by this x the learning rate (decoupled, as AdamW; "
                   "not biases or batch-norm parameters); 0: off.")
@click.option("--init-from", type=click.Path(exists=True, dir_okay=False),
              help="Start from the weights of this saved tower.keras (same architecture and input size) "
                   "instead of random ones: fine-tuning.")
@click.option("--teacher", "teachers", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A saved tower.keras (repeat for several) whose ensemble the tower learns to imitate: "
                   "distillation, weighted by --distill-loss.")
@click.option("--distill-loss", type=click.FloatRange(min=0), default=TRAINING_DEFAULTS.distill_loss,
              show_default=True,
              help="Weight of the term that asks the tower's similarities of every two images of a batch "
                   "to equal the --teacher towers' mean similarity; 0: off.")
@click.option("--input-size", callback=parse_size,
              help="Network input HxW, e.g. 32x32 [default: 96x192 for signatures, 48x48 for Omniglot; "
                   "64x128 and 105x105 with --arch koch].")
@click.option("--epochs", default=TRAINING_DEFAULTS.epochs, show_default=True)
@click.option("--steps-per-epoch", default=TRAINING_DEFAULTS.steps_per_epoch, show_default=True)
@click.option("--writers-per-batch", default=TRAINING_DEFAULTS.writers_per_batch, show_default=True)
@click.option("--genuine-per-writer", default=TRAINING_DEFAULTS.genuine_per_writer, show_default=True)
@click.option("--forged-per-writer", default=TRAINING_DEFAULTS.forged_per_writer, show_default=True,
              help="Skilled forgeries per writer in a batch (genuine ones stand in when a writer has none).")
@click.option("--mirrors", type=click.Choice(["1", "2", "4"]),
              default=str(TRAINING_DEFAULTS.mirrors), show_default=True,
              callback=lambda ctx, param, value: int(value),
              help="Also train on mirrored copies of each writer, as new writers: 2 adds left-right "
                   "mirrors, 4 also upside-down ones (class augmentation).")
@click.option("--writer-loss", type=click.FloatRange(min=0), default=TRAINING_DEFAULTS.writer_loss, show_default=True,
              help="Weight of an extra writer-classification term (cosine softmax over the training "
                   "writers' genuine signatures); 0: the pair objective alone.")
@click.option("--pooled-loss", type=click.FloatRange(min=0), default=TRAINING_DEFAULTS.pooled_loss, show_default=True,
              help="Weight of an extra term that orders every genuine pair of a batch before every skilled-forgery "
                   "pair of it, across writers (one distance scale for all writers, as one threshold needs); "
                   "0: off.")
@click.option("--forgery-loss", type=click.FloatRange(min=0), default=TRAINING_DEFAULTS.forgery_loss, show_default=True,
              help="Weight of an extra term in which a logistic head tells each image's embedding as genuine or "
                   "skilled forgery, whoever the writer (SigNet-F); 0: off.")
@click.option("--people-fraction", type=click.FloatRange(0, 1, min_open=True),
              default=TRAINING_DEFAULTS.people_fraction, show_default=True,
              help="Train on this fraction of each dataset's training people (at least one), drawn by --seed: "
                   "a learning curve over the number of writers.")
@click.option("--stroke-variants", type=click.IntRange(1, 16), default=TRAINING_DEFAULTS.stroke_variants,
              show_default=True,
              help="Draw each training pen-stroke file this many ways (pen width, pressure response, "
                   "ink, paper); 1: only as the device's pad renderer draws it.")
@click.option("--stroke-bend", type=click.FloatRange(0.0, 0.5),
              default=TRAINING_DEFAULTS.stroke_bend, show_default=True,
              help="How far the extra stroke variants redraw each pen trajectory, as a writer's hand would "
                   "(smooth displacements of about this fraction of the ink's height); 0: the same path.")
@click.option("--bent-forgeries", type=click.IntRange(0, 16), default=TRAINING_DEFAULTS.bent_forgeries,
              show_default=True,
              help="Add this many synthetic skilled forgeries of each training pen-stroke signature: its "
                   "trajectory redrawn bent, as a forger's hand strays from the writer's.")
@click.option("--geometry-scale", type=click.FloatRange(min=0),
              default=TRAINING_DEFAULTS.geometry_scale, show_default=True,
              help="How far the random rotation, zoom, shear and shift of training images go, relative "
                   "to the defaults (--rotation, 10 %, 0.15 shear, 5 %); 0: none.")
@click.option("--rotation", type=click.FloatRange(0, 45), default=TRAINING_DEFAULTS.rotation,
              show_default=True,
              help="The largest random turn of a training image, in degrees either way (times "
                   "--geometry-scale): people sign at an angle to the page or pad.")
@click.option("--erase", type=click.FloatRange(0, 1), default=TRAINING_DEFAULTS.erase, show_default=True,
              help="Share of training images that lose a random rectangle (random erasing); 0: none.")
@click.option("--ink-augmentation/--no-ink-augmentation", default=TRAINING_DEFAULTS.ink_augmentation,
              show_default=True,
              help="Randomly thicken, thin, blur, darken and grain the strokes of training images.")
@click.option("--learning-rate", default=TRAINING_DEFAULTS.learning_rate, show_default=True)
@click.option("--margin", type=float, default=TRAINING_DEFAULTS.margin, help="Loss margin (default per objective).")
@click.option("--mining", type=click.Choice(["hard", "semihard"]), default=TRAINING_DEFAULTS.mining, show_default=True)
@click.option("--seed", default=TRAINING_DEFAULTS.seed, show_default=True)
@click.option("--max-minutes", type=float, default=TRAINING_DEFAULTS.max_minutes,
              help="Stop after this much wall time, whatever the epoch (a time budget).")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]),
              default=TRAINING_DEFAULTS.strategy,
              show_default=True, help="tf.distribute strategy; multiworker reads TF_CONFIG.")
@click.option("--cpu-replicas", default=TRAINING_DEFAULTS.cpu_replicas, hidden=True,
              help="Split the CPU into N logical devices (testing).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
def train(data_dirs, layouts, out_dir, **options):
    """Train the Siamese signature (or Omniglot character) embedding (needs edge-verify[train])."""
    need_tensorflow()
    if layouts and len(layouts) != len(data_dirs):
        raise click.BadParameter("give one --layout per --data, or none", param_hint="--layout")
    from edge_verify.training.train import train as run_training

    data = list(zip(data_dirs, layouts or [None] * len(data_dirs)))
    try:
        run = run_training(data, out_dir, **options)
    except (FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    metric = run["validation"]
    click.echo(f"best {metric} {100 * run['best'][metric]:.2f} % at epoch "
               f"{run['best']['epoch']}; {out_dir}/tower.keras ({run['wall_seconds']:.0f} s)")


@click.command()
@click.option("--model", default=None, help="Bundle folder, a .tflite inside one, a .keras tower, or hog "
              "(the non-learned floor) (default: the bundled model).")
@click.option("--data", "roots", required=True, multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder; repeat for several (each is scored on its own).")
@click.option("--layout", type=click.Choice(LAYOUTS), default=None, help="Detected when omitted.")
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default="test", show_default=True)
@click.option("--refs", default="1,5,10", show_default=True, help="Numbers of references R, comma-separated.")
@click.option("--no-floor", is_flag=True, help="Do not score the non-learned floor beside the model.")
@click.option("--vs", "other_model", default=None,
              help="A second model (same kinds as --model) scored on the same writers: prints the interval "
                   "of the model's EER minus this one's, to choose between two ideas.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON report here (one --data; with several, NAME_<dataset>.json), "
                   "and a DET curve PNG beside each.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def evaluate(model, roots, layout, split, refs, no_floor, other_model, report_path, as_json):
    """Score a model on datasets with the protocol of EVALUATION.md, beside the floor."""
    import json
    from pathlib import Path

    from edge_verify.training.evaluate import bootstrap_eer, evaluate_model
    from edge_verify.training.report import write_report

    try:
        refs_list = tuple(int(r) for r in refs.split(","))
    except ValueError:
        raise click.BadParameter(f"{refs!r} is not a comma-separated list of numbers", param_hint="--refs")
    if any(str(m).endswith(".keras") for m in (model, other_model)):  # bundles run on LiteRT alone
        need_tensorflow()
    reports, pool, floor_pool, other_pool = [], {}, {}, {}
    for root in roots:
        report, scores = evaluate_model(model, root, layout, split, refs_list, floor=not no_floor)
        pool[report["dataset"]] = scores
        if "floor_scores" in report:
            floor_pool[report["dataset"]] = report.pop("floor_scores")
        if other_model:
            other_report, other_pool[report["dataset"]] = evaluate_model(other_model, root, layout, split,
                                                                         refs_list, floor=False)
            report["vs"] = {"model": other_report["model"], "results": other_report["results"],
                            "eer_minus_vs_ci95": {r: bootstrap_eer(scores[r], other_pool[report["dataset"]][r])
                                                  for r in refs_list}}
        reports.append(report)
        if report_path:
            path = Path(report_path)
            if len(roots) > 1:
                path = path.with_name(f"{path.stem}_{report['dataset']}{path.suffix}")
            write_report(report, scores, path)
        if not as_json:
            click.echo(text_report(report))
    if len(roots) > 1 and not as_json:
        click.echo(pool_text(pool, floor_pool))
    if other_model and not as_json:
        click.echo(vs_text(reports, pool, other_pool))
    if as_json:
        click.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))


def pool_text(pool, floor_pool):
    """The pool line: the weighted mean over datasets of each one's mean EER over R, with intervals."""
    from edge_verify.training.evaluate import pool_bootstrap, pool_figure

    low, high = pool_bootstrap(pool)
    text = f"pool of {len(pool)} datasets (mean EER over R; datasets weighted by the square root of their people): " \
           f"{100 * pool_figure(pool):.2f} % [{100 * low:.1f}, {100 * high:.1f}]"
    if floor_pool:
        low, high = pool_bootstrap(floor_pool)
        d_low, d_high = pool_bootstrap(pool, floor_pool)
        text += (f"; floor {100 * pool_figure(floor_pool):.2f} % [{100 * low:.1f}, {100 * high:.1f}]; "
                 f"model - floor [{100 * d_low:.1f}, {100 * d_high:.1f}] points")
    return text


def vs_text(reports, pool, other_pool):
    """Model against --vs: each dataset's EERs side by side with the paired interval of the difference."""
    from edge_verify.training.evaluate import pool_bootstrap, pool_figure

    lines = [f"against {reports[0]['vs']['model']} (same writers; model - vs, 95 % paired bootstrap):"]
    for report in reports:
        for mine, theirs in zip(report["results"], report["vs"]["results"]):
            interval = report["vs"]["eer_minus_vs_ci95"][mine["refs"]]
            if mine["eer"] is not None and interval:
                lines.append(f"  {report['dataset']} R={mine['refs']}: {100 * mine['eer']:.2f} % vs "
                             f"{100 * theirs['eer']:.2f} %, difference [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]")
    if len(pool) > 1:
        low, high = pool_bootstrap(pool, other_pool)
        lines.append(f"  pool: {100 * pool_figure(pool):.2f} % vs {100 * pool_figure(other_pool):.2f} %, "
                     f"difference [{100 * low:.1f}, {100 * high:.1f}] points")
    return "\n".join(lines)


def text_report(report):
    """The report as a table: EER with its bootstrap interval, the floor's beside it."""
    percent = lambda value: "    -" if value is None else f"{100 * value:5.2f}"
    interval = lambda ci: "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    floor = report.get("floor")
    lines = [f"{report['dataset']}, {report['split']} writers, model {report['model']}",
             f"  R    EER [95 % CI]           FRR  FAR-skilled  FAR-random  (at threshold "
             f"{report['calibration']['threshold']:.3f})" + ("   floor EER [95 % CI]" if floor else "")]
    for i, r in enumerate(report["results"]):
        if r["eer"] is None:
            lines.append(f"{r['refs']:3d}  no writer has both genuine queries and skilled forgeries")
            continue
        line = (f"{r['refs']:3d} {percent(r['eer'])}%{interval(r['eer_ci95']):<14} {percent(r['frr'])}%"
                f"      {percent(r['far_skilled'])}%      {percent(r['far_random'])}%"
                f"   ({r['writers']} writers, {r['genuine_queries']}+{r['skilled_queries']} queries)")
        if floor:
            f = floor["results"][i]
            line += f"   {percent(f['eer'])}%{interval(f['eer_ci95'])}"
        lines.append(line)
    if floor:
        lines.append(f"  floor: {floor['descriptor']}")
    return "\n".join(lines)


@click.command("evaluate-omniglot")
@click.option("--model", default=None, help="Bundle folder or .keras tower trained on images_background.")
@click.option("--runs", "runs_zip", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Lake's all_runs.zip.")
@click.option("--json", "as_json", is_flag=True)
def evaluate_omniglot(model, runs_zip, as_json):
    """Score a model on Lake's 20-way one-shot runs (percent correct of 400 trials)."""
    import json

    import numpy as np

    from edge_verify.edge.preprocess import preprocess
    from edge_verify.training.embedders import load_embedder
    from edge_verify.training.omniglot import euclidean_similarity, load_one_shot_runs, score_one_shot

    embedder = load_embedder(model)

    def embed(images):
        batch = np.stack([preprocess(image, embedder.input_size) for image in images])[..., None]
        return embedder.embed(batch)

    correct = score_one_shot(load_one_shot_runs(runs_zip),
                             lambda test, train: euclidean_similarity(embed(test), embed(train)))
    result = {"model": str(embedder.path), "model_sha256": embedder.sha256, "trials": 400,
              "percent_correct": correct}
    click.echo(json.dumps(result, indent=2) if as_json else f"Omniglot 20-way one-shot: {correct:.1f} % correct")


@click.command()
@click.option("--model", "bundle", default=None, metavar="BUNDLE_DIR",
              help="Our model bundle (default: the bundled model).")
@click.option("--baseline", "baseline_run", default=None, type=click.Path(exists=True, file_okay=False),
              help="Koch run folder (tower.keras + koch_head.keras from `train --arch koch --objective koch`); "
                   "without it the Koch network has random weights: speed and size only.")
@click.option("--tower", "tower_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Our Keras tower, for the Keras rows (default: runs/*/tower.keras whose sha256 is the "
                   "bundle's source_model_sha256).")
@click.option("--datasets", default=None, type=click.Path(exists=True, file_okay=False),
              help="The datasets folder (default: ../shared/datasets beside the checkout).")
@click.option("--out", "out_dir", default="bench_out", show_default=True, type=click.Path(file_okay=False),
              help="Writes bench.json and bench.md here.")
@click.option("--quick", is_flag=True, help="Smoke run: few repeats, 1k users, 3 CEDAR test writers.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of the table.")
def bench(bundle, baseline_run, tower_path, datasets, out_dir, quick, as_json):
    """Speed, size and accuracy of our model beside the Koch et al. baseline, one core, one run."""
    need_tensorflow()
    import json

    from edge_verify.tools.benchmark import DATASETS
    from edge_verify.training.bench import command_line, run_bench, text_table, write_report

    report = run_bench(bundle, baseline_run, tower_path, datasets or DATASETS, quick)
    report["command"] = command_line(model=bundle, baseline=baseline_run, tower=tower_path, datasets=datasets,
                                     out=out_dir, quick=quick, json=as_json)
    json_path, markdown_path = write_report(report, out_dir)
    click.echo(json.dumps(report, indent=2, default=str) if as_json
               else f"{text_table(report)}\n\nwritten: {json_path}, {markdown_path}")
