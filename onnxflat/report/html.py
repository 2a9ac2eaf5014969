"""A self-contained HTML report: measures, head diagram and per-filter flatness plots.

The plots need matplotlib (extra ``report``); :func:`require_matplotlib` says how to
install it. PNGs are embedded as base64, so the page is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from ..errors import OnnxflatError
from .text import pm


def require_matplotlib():
    """The pyplot module with the non-interactive Agg backend, or an install hint."""
    try:
        import matplotlib
    except ImportError:
        raise OnnxflatError("onnxflat report draws with matplotlib, which is not installed: "
                            "pip install 'onnxflat[report]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def per_filter_png(layer: dict) -> bytes:
    """Bar charts of each filter's share of kappa and of the trace, ``layer`` a result
    layer dict; the dashed line is the mean over filters."""
    plt = require_matplotlib()
    panels = [(m, layer["per_filter"][m]) for m in ("kappa", "trace")
              if layer["per_filter"].get(m) is not None]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for ax, (measure, vals) in zip(axes[:, 0], panels):
        ax.bar(range(len(vals)), vals, color="#4c72b0")
        ax.axhline(sum(vals) / len(vals), color="k", ls="--", lw=0.8)
        ax.set_ylabel(f"{measure} share")
        ax.set_xlim(-0.6, len(vals) - 0.4)
        ax.set_title(f"{layer['conv']}: per-filter {measure} (sum {sum(vals):.4g})", fontsize=10)
    axes[-1, 0].set_xlabel("filter (output channel)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _rows(doc: dict) -> list[tuple[str, str]]:
    se = doc["stderr"]
    rows = [("samples", str(doc["n_samples"])), ("loss", pm(doc["loss"], se.get("loss"))),
            ("accuracy", pm(doc["accuracy"], se.get("accuracy")))]
    for layer in doc["layers"]:
        for m in ("trace", "kappa", "kappa_layerwise"):
            rows.append((f"{layer['conv']} {m}", pm(layer[m], layer["stderr"].get(m))))
    c = doc["classifier"]
    if c is None:
        rows.append(("classifier", "none (the head has no classifier layer)"))
    else:
        if c.get("layer"):
            rows.append(("classifier layer", c["layer"]))
        rows += [(f"classifier {m}", pm(c[m], c["stderr"].get(m))) for m in ("trace", "kappa")]
    return rows


def page(doc: dict, head_text: str, data: str, pngs: dict[str, bytes],
         samples: str = "") -> str:
    """The HTML page of result dict ``doc``; ``pngs`` maps a conv name to its plot;
    ``samples``: the top samples' section (:func:`samples_section`)."""
    e = html.escape
    table = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _rows(doc))
    plots = "\n".join(
        f'<figure><img alt="per-filter flatness of {e(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}"></figure>'
        for name, png in pngs.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>onnxflat report: {e(doc['model'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
table{{border-collapse:collapse}}th,td{{padding:.2em .8em;border-bottom:1px solid #ddd;
text-align:left}}td{{font-family:monospace}}pre{{background:#f4f4f4;padding:1em}}
img{{max-width:100%}}table.samples img{{width:48px;image-rendering:pixelated}}</style></head>
<body>
<h1>onnxflat report</h1>
<p>model <code>{e(doc['model'])}</code> on <code>{e(data)}</code>
({doc['n_samples']} samples{', ' + e(doc['provider']) if doc.get('provider') else ''})</p>
<h2>Measures</h2>
<table>
{table}
</table>
<p>± is the standard error over samples. Definitions: docs/flatness-math.md.</p>
<h2>Head</h2>
<pre>{e(head_text)}</pre>
<h2>Per-filter flatness</h2>
<p>Each filter's share of the layer's relative flatness kappa (rows of the filter-wise
sum) and of the Hessian trace (diagonal blocks); the shares sum to the layer's values.</p>
{plots}
{samples}
</body></html>
"""


def top_samples(table, k: int) -> tuple[str, np.ndarray, np.ndarray]:
    """The ``k`` samples of a per-sample table with the largest contribution to the conv
    layers' kappa (summed over layers; the trace when kappa is off): ``(measure name,
    rows of the table, each one's share of the total)``, largest first."""
    names = table.dtype.names
    cols = [n for n in names if n.startswith("layer") and n.endswith(".kappa")]
    label = "kappa"
    if not cols:
        cols = [n for n in names if n.startswith("layer") and n.endswith(".trace")]
        label = "trace"
    score = np.sum([table[c] for c in cols], axis=0)
    order = np.argsort(-score, kind="stable")[:k]
    return label, table[order], score[order] / np.sum(score)


def sample_png(x: np.ndarray) -> bytes | None:
    """A thumbnail of one input when it is an image (``(C, H, W)`` or ``(H, W, C)`` with
    C 1 or 3, H and W at least 4), scaled to its own range; else None."""
    x = np.asarray(x, np.float64)
    if x.ndim != 3:
        return None
    if x.shape[0] in (1, 3) and min(x.shape[1:]) >= 4:
        x = np.moveaxis(x, 0, -1)
    elif not (x.shape[2] in (1, 3) and min(x.shape[:2]) >= 4):
        return None
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    plt = require_matplotlib()
    fig = plt.figure(figsize=(1, 1), dpi=64)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(x[..., 0] if x.shape[2] == 1 else x, cmap="gray", interpolation="nearest")
    ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def samples_section(label: str, rows, shares, images: dict[int, bytes]) -> str:
    """HTML table of the top samples (:func:`top_samples`), with their images if any."""
    e = html.escape
    layers = [n for n in rows.dtype.names if n.startswith("layer")]
    extra = [n for n in ("classifier.trace", "classifier.kappa") if n in rows.dtype.names]
    head = "".join(f"<th>{e(h)}</th>" for h in (
        ["rank", "index", *(["image"] if images else []), "label", "correct", "loss",
         f"share of {label}"] + layers + extra))
    body = []
    for rank, (row, share) in enumerate(zip(rows, shares), 1):
        idx = int(row["index"])
        img = (f'<td><img alt="sample {idx}" src="data:image/png;base64,'
               f'{base64.b64encode(images[idx]).decode()}"></td>' if idx in images else
               ("<td></td>" if images else ""))
        cells = [f"{float(row[n]):.4g}" for n in layers + extra]
        body.append(f"<tr><td>{rank}</td><td>{idx}</td>{img}<td>{int(row['label'])}</td>"
                    f"<td>{'yes' if row['correct'] else 'no'}</td><td>{float(row['loss']):.4g}"
                    f"</td><td>{100 * share:.2f}%</td>"
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f"<h2>Samples that make the model sharp</h2>\n<p>The {len(rows)} samples with the "
            f"largest contribution to the conv layers' {e(label)} (each measure is a mean of "
            "per-sample terms; the share is the sample's term over their sum). All samples: "
            "<code>onnxflat measure --per-sample FILE</code>.</p>\n"
            f"<table class=\"samples\"><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>")
