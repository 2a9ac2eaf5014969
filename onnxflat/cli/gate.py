"""``onnxflat gate``: pass/fail a model on flatness limits, for CI."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import OnnxflatError
from ..report import gate as g, write_json
from .app import guard, main
from .options import (
    DATA_HELP,
    data_fingerprint,
    data_options,
    json_option,
    prepare,
    result_doc,
    run_measure,
    run_options,
)

EXIT_FAILED = 1


@main.command(epilog=DATA_HELP)
@click.argument("model", type=click.Path(dir_okay=False))
@data_options
@click.option("--baseline", type=click.Path(dir_okay=False),
              help="Result JSON of an accepted model, measured on the same data "
                   "(onnxflat measure ... --json). Recommended.")
@click.option("--max-increase", default="10%", show_default=True,
              help="Largest allowed increase over the baseline: a percentage (10%) or a ratio "
                   "(1.1x); a bare number is refused.")
@click.option("--on", "on", multiple=True, type=click.Choice(g.LAYER_MEASURES),
              help="Measures compared with the baseline, as the total over the head's conv "
                   "layers (repeatable) [default: kappa, which is invariant to "
                   "reparameterization].")
@click.option("--per-layer", is_flag=True,
              help="Also compare each conv layer with its baseline layer (matched by position "
                   "in the head and kernel shape, not by node name).")
@click.option("--max-accuracy-drop", default="5%", show_default=True,
              help="Fail when accuracy is more than this below the baseline's (accuracy "
                   "points: 5% or 0.05) or near chance level; 'off' skips both checks.")
@click.option("--max-kappa", multiple=True, metavar="[LAYER=]V",
              help="Limit on kappa: of the total over conv layers, or of one layer "
                   "(or 'classifier'). Repeatable.")
@click.option("--max-trace", multiple=True, metavar="[LAYER=]V",
              help="Limit on the Hessian trace, as --max-kappa.")
@click.option("--summary-md", type=click.Path(dir_okay=False),
              help="Append a Markdown summary to this file (e.g. $GITHUB_STEP_SUMMARY).")
@run_options
@json_option("Write the result with the gate's checks as JSON.")
@guard
def gate(model, data, baseline, max_increase, on, per_layer, max_accuracy_drop, max_kappa,
         max_trace, summary_md, run, json_out):
    """Fail (exit 1) if MODEL does not fit the data or its flatness is over its limits.

    Fit first: accuracy must be clearly above chance and at most --max-accuracy-drop below
    the baseline's (the flatness of a model that does not fit the data says little). Then
    flatness: the ratio to a baseline measured on the same data (absolute values depend on
    the data's scale) of kappa totalled over the head's conv layers, and/or absolute limits.
    Lower kappa and trace are flatter. Exit 0 pass, 1 gate failed (a table says what failed
    and by how much), 2 bad input. Under GitHub Actions (GITHUB_ACTIONS=true) failures are
    also printed as ::error:: annotations.

    \b
    Examples:
      onnxflat gate new.onnx --data train.npz --baseline docs/ci/baseline.json --max-increase 10%
      onnxflat gate new.onnx --data train.npz --baseline old.json --max-increase 1.25x --per-layer
      onnxflat gate new.onnx --data train.npz --max-kappa 1000 --max-trace /conv2/Conv=0.8
      onnxflat gate new.onnx --data train.npz --baseline old.json --summary-md summary.md
    """
    if not (baseline or max_kappa or max_trace):
        raise OnnxflatError("nothing to gate on: give --baseline OLD.json and/or "
                            "--max-kappa / --max-trace")
    limits = {m: list(v) for m, v in (("kappa", max_kappa), ("trace", max_trace)) if v}
    # Everything that can be refused is refused before the (long) run.
    ratio = g.parse_increase(max_increase)
    drop = g.parse_accuracy_drop(max_accuracy_drop)
    prepared = prepare(model, run)
    head = prepared.head
    subjects = {g.parse_limit(spec)[0] for specs in limits.values() for spec in specs}
    known = [layer.conv.node for layer in head.layers]
    for s in sorted(subjects - {g.TOTAL, g.CLASSIFIER} - set(known)):
        raise OnnxflatError(f"no layer {s!r} in the head; known: "
                            f"{', '.join(known + [g.CLASSIFIER, g.TOTAL])}")
    base = g.load_baseline(baseline) if baseline else None
    on = tuple(on) or ("kappa",)
    if not run.kappa and ("kappa" in limits or (base is not None and "kappa" in on)):
        raise OnnxflatError("--no-filter-kappa skips the kappa this gate needs (gate the "
                            "baseline --on trace or --on kappa_layerwise, or use --max-trace)")
    data = prepared.fit(data)
    fingerprint = data_fingerprint(data)
    if base is not None:
        g.match_layers([list(layer.conv.kernel.shape) for layer in head.layers], base)
        g.same_data(fingerprint, base)
    res = run_measure(prepared, data, run.quiet)
    doc = result_doc(res, data, fingerprint)
    checks = g.evaluate(doc, limits, base, ratio, on, per_layer=per_layer,
                        max_accuracy_drop=drop, num_classes=head.num_classes)
    fit = g.fit_lines(doc, base)
    click.echo(f"model: {model}\ndata:  {data.name}, {res.n_samples} samples"
               + (f"\nbaseline: {baseline}" if baseline else ""))
    click.echo("\n".join(fit))
    click.echo(g.table(checks))
    click.echo(g.verdict(checks))
    if g.in_github_actions():
        for line in g.annotations(checks, Path(model).name):
            click.echo(line)
    if summary_md:
        try:
            with open(summary_md, "a", encoding="utf-8") as f:  # append: $GITHUB_STEP_SUMMARY
                f.write(g.markdown(checks, model, data.name, res.n_samples, baseline, fit))
        except OSError as exc:
            raise OnnxflatError(f"cannot write {summary_md}: {exc.strerror}") from None
    if json_out:
        doc["gate"] = {"passed": all(c.passed for c in checks), "baseline": baseline,
                       "max_ratio": ratio if base is not None else None,
                       "max_accuracy_drop": drop,
                       "checks": [c.to_dict() for c in checks]}
        write_json(doc, json_out)
    if not all(c.passed for c in checks):
        click.get_current_context().exit(EXIT_FAILED)
