"""Does relative flatness predict generalization? A family of small CNNs on scikit-learn's digits.

Trains the sample architecture of tools/make_sample.py (conv -> ReLU -> conv -> BN -> ReLU -> GAP ->
linear, 8x8 inputs) one factor at a time around a base configuration, for several seeds, under two
protocols (A: a fixed number of epochs; B: until a fixed training loss, Jiang et al.'s); exports
each model to ONNX, measures it with onnxflat on its own training data, and reports Kendall tau and
Spearman rho of every measure with the generalization gap, overall and granulated per
hyper-parameter (Jiang et al. 2020, "Fantastic generalization measures"), plus a
reparameterization check. Writes <out>/study.json, the generated part of <out>/study.md, the
plots <out>/study.png (A) and <out>/study-stop.png (B), and a few seed-0 models of A into
--models (default models/family). Deterministic (fixed seeds, one thread):

    python tools/study.py                  # the full study (about 10 CPU minutes)
    python tools/study.py --quick --out /tmp/q   # 3 cheap models of the family, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
from make_sample import DigitsCNN, digits_split, export, train  # noqa: E402

import onnxflat  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run; ``n_train=None`` is the whole training split (1300 images)."""

    width: int = 16
    weight_decay: float = 5e-4
    lr: float = 0.05
    batch_size: int = 64
    n_train: int | None = None
    label_noise: float = 0.0
    epochs: int = 30  # with stop_loss: at most this many
    stop_loss: float | None = None


# One factor at a time around Config(): each axis lists its values other than the base one.
AXES = {
    "width": [4, 8, 32],
    "weight_decay": [0.0, 1e-4, 2e-3, 1e-2],
    "lr": [0.005, 0.01, 0.02, 0.1],
    "batch_size": [16, 32, 128, 256],
    "n_train": [100, 200, 400, 800],
    "label_noise": [0.1, 0.2, 0.3, 0.5],
    "epochs": [5, 10, 20, 60],
}
SEEDS = (0, 1, 2)
STOP_LOSS, MAX_EPOCHS = 0.05, 100


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How the family is trained: the base Config and the axes varied around it."""

    title: str
    base: Config
    axes: tuple[str, ...]
    prefix: str  # of run names
    plot: str  # file name of the scatter plot


PROTOCOLS = {
    "epochs": Protocol("A. Fixed training length (30 epochs)", Config(), tuple(AXES), "",
                       "study.png"),
    # Jiang et al.'s protocol: every model to the same training loss; noisy labels cannot get there
    "loss": Protocol(f"B. Trained to a training loss <= {STOP_LOSS} (at most {MAX_EPOCHS} epochs)",
                     Config(stop_loss=STOP_LOSS, epochs=MAX_EPOCHS),
                     tuple(a for a in AXES if a not in ("label_noise", "epochs")), "stop-",
                     "study-stop.png"),
}
QUICK = (("n_train", 100), ("n_train", 200), ("n_train", 400))  # cheapest of A, seed 0
SHIPPED = (("base", None), ("width", 4), ("weight_decay", 0.0), ("n_train", 100),
           ("label_noise", 0.5), ("epochs", 5))  # seed 0 -> models/family/
HUTCHINSON_PROBES = 32
FITTED_ACC = 0.99  # the "fitted" subset of the report: train accuracy at least this

# (key, label); the sign convention is "larger measure -> larger predicted gap".
MEASURES = (
    ("conv_kappa", "conv kappa (filter-wise)"),
    ("conv_kappa_layerwise", "conv kappa (layer-wise)"),
    ("conv_trace", "conv trace"),
    ("clf_kappa", "classifier kappa"),
    ("clf_trace", "classifier trace"),
    ("hutchinson_trace", f"full Hessian trace (Hutchinson, {HUTCHINSON_PROBES} probes)"),
    ("kernel_fro2", "last conv kernel ‖K‖²_F"),
    ("log_prod_fro", "log prod of Frobenius norms"),
    ("log_prod_spec", "log prod of spectral norms"),
    ("sum_sq", "sum of squared weights"),
)
GAPS = (("gap_loss", "test - train loss"), ("gap_acc", "train - test accuracy"))


@dataclasses.dataclass(frozen=True)
class Run:
    """One member of the family: the protocol's base, or its base with ``axis`` set to
    ``value``."""

    protocol: str
    axis: str  # "base" or a key of AXES
    value: float | int | None
    seed: int

    @property
    def config(self) -> Config:
        base = PROTOCOLS[self.protocol].base
        return base if self.axis == "base" else dataclasses.replace(base, **{self.axis: self.value})

    @property
    def name(self) -> str:
        stem = "base" if self.axis == "base" else f"{self.axis}-{self.value}"
        return f"{PROTOCOLS[self.protocol].prefix}{stem}-s{self.seed}"


def family(seeds=SEEDS, quick: bool = False) -> list[Run]:
    """Every protocol's base and one-factor variants, for every seed."""
    if quick:
        return [Run("epochs", a, v, 0) for a, v in QUICK]
    return [Run(key, a, v, s) for key, p in PROTOCOLS.items() for s in seeds
            for a, v in [("base", None)] + [(a, v) for a in p.axes for v in AXES[a]]]


def training_data(cfg: Config, seed: int, x: np.ndarray, y: np.ndarray):
    """The run's own training set: a seeded subset, then a seeded share of labels reassigned to a
    different class uniformly at random."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))[:cfg.n_train] if cfg.n_train else np.arange(len(y))
    x, y = x[idx], y[idx].copy()
    flip = rng.random(len(y)) < cfg.label_noise
    y[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    return x, y


def fit(cfg: Config, seed: int, x, y) -> DigitsCNN:
    torch.manual_seed(seed)  # the initialisation
    return train(DigitsCNN(cfg.width), x, y, epochs=cfg.epochs, lr=cfg.lr,
                 weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, seed=seed,
                 stop_loss=cfg.stop_loss)


@torch.no_grad()
def evaluate(model, x, y) -> tuple[float, float]:
    """(mean cross-entropy, accuracy)."""
    out = model(torch.from_numpy(x))
    return (F.cross_entropy(out, torch.from_numpy(y)).item(),
            float((out.argmax(1).numpy() == y).mean()))


def hutchinson_trace(model, x, y, probes: int = HUTCHINSON_PROBES, seed: int = 0) -> float:
    """Stochastic trace of the Hessian of the mean loss w.r.t. all torch parameters (eval mode):
    mean of v^T H v over Rademacher probes v (the PyHessian estimator)."""
    params = list(model.parameters())
    loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    grads = torch.autograd.grad(loss, params, create_graph=True)
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(probes):
        v = [torch.randint(0, 2, p.shape, generator=g).float() * 2 - 1 for p in params]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        total += sum((a * b).sum() for a, b in zip(hv, v)).item()
    return total / probes


def weight_norms(path: Path) -> dict:
    """Norm baselines of the exported (BN-folded) weights of every Conv and Gemm node.

    The spectral norm of a conv kernel is that of its (C_out, C_in*kh*kw) reshape."""
    m = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    mats = [init[n.input[1]].reshape(len(init[n.input[1]]), -1) if n.op_type == "Conv"
            else init[n.input[1]] for n in m.graph.node if n.op_type in ("Conv", "Gemm")]
    last_conv = [n for n in m.graph.node if n.op_type == "Conv"][-1]
    return {
        "kernel_fro2": float((init[last_conv.input[1]] ** 2).sum()),
        "log_prod_fro": float(sum(np.log(np.linalg.norm(w)) for w in mats)),
        "log_prod_spec": float(sum(np.log(np.linalg.norm(w, 2)) for w in mats)),
        "sum_sq": float(sum((w ** 2).sum() for w in mats)),
    }


def measures(model, path: Path, x, y) -> dict:
    """Every measure of MEASURES for one exported model on its training data, plus onnxflat's
    loss and accuracy (cross-checks of the export)."""
    r = onnxflat.measure(path, x, y)
    layer = r.layers[0]
    return {"conv_kappa": layer.kappa, "conv_kappa_layerwise": layer.kappa_layerwise,
            "conv_trace": layer.trace, "clf_kappa": r.classifier.kappa,
            "clf_trace": r.classifier.trace, "hutchinson_trace": hutchinson_trace(model, x, y),
            **weight_norms(path), "onnx_loss": r.loss, "onnx_accuracy": r.accuracy}


def run_one(run: Run, data, workdir: Path) -> dict:
    xtr_all, ytr_all, xte, yte = data
    cfg = run.config
    x, y = training_data(cfg, run.seed, xtr_all, ytr_all)
    model = fit(cfg, run.seed, x, y)
    path = workdir / f"{run.name}.onnx"
    export(model, path, x)
    train_loss, train_acc = evaluate(model, x, y)
    test_loss, test_acc = evaluate(model, xte, yte)
    m = measures(model, path, x, y)
    if not math.isclose(m.pop("onnx_loss"), train_loss, rel_tol=1e-4, abs_tol=1e-6) or \
            abs(m.pop("onnx_accuracy") - train_acc) > 1e-9:
        raise RuntimeError(f"{path.name}: onnxflat's loss/accuracy disagree with torch's")
    return {"name": run.name, "protocol": run.protocol, "axis": run.axis, "value": run.value,
            "seed": run.seed, "n_train": len(y),
            "reached": None if cfg.stop_loss is None else train_loss <= cfg.stop_loss,
            "train_loss": train_loss, "test_loss": test_loss,
            "train_acc": train_acc, "test_acc": test_acc, "gap_loss": test_loss - train_loss,
            "gap_acc": train_acc - test_acc, "measures": m}


# ---------------------------------------------------------------- correlations and tables

def _tau(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.kendalltau(a, b).statistic)


def correlations(records: list[dict]) -> dict:
    """{measure: {gap: {"tau", "rho", "axes": {axis: mean tau over seeds}, "psi"}}}.

    Granulated (Jiang et al. 2020): for each axis and seed, tau within the group {base, that
    axis's variants}; averaged over seeds; psi is the mean over axes."""
    out = {}
    for key, _ in MEASURES:
        out[key] = {}
        for gap, _ in GAPS:
            m = [r["measures"][key] for r in records]
            g = [r[gap] for r in records]
            axes = {}
            for axis in AXES:
                per_seed = []
                for s in sorted({r["seed"] for r in records}):
                    grp = [r for r in records if r["seed"] == s and r["axis"] in ("base", axis)]
                    if any(r["axis"] == axis for r in grp):
                        per_seed.append(_tau([r["measures"][key] for r in grp],
                                             [r[gap] for r in grp]))
                if per_seed and not all(map(math.isnan, per_seed)):
                    axes[axis] = float(np.nanmean(per_seed))
            rho = stats.spearmanr(m, g).statistic if len(m) >= 3 else math.nan
            out[key][gap] = {"tau": _tau(m, g), "rho": float(rho), "axes": axes,
                             "psi": float(np.mean(list(axes.values()))) if axes else math.nan}
    return out


def _f(v, fmt="+.2f") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def render_protocol(records: list[dict]) -> str:
    """Markdown of one protocol's runs: correlation tables over the runs that count (all, or
    those that reached the training loss), then every run."""
    runs = records
    records = [r for r in runs if r["reached"] is not False]
    c = correlations(records)
    dropped = sorted({r["name"].rsplit("-s", 1)[0] for r in runs if r["reached"] is False})
    lines = ["#### Overall correlation with the generalization gap", "",
             f"{len(records)} models"
             + (f" ({len(runs) - len(records)} runs that did not reach the training loss left "
                f"out: {', '.join(dropped)})" if dropped else "")
             + ". tau: Kendall tau-b; rho: Spearman; psi: granulated tau "
             "(mean over the hyper-parameter axes below).", "",
             "| measure | tau (loss gap) | rho (loss gap) | psi (loss gap) | tau (acc gap) "
             "| rho (acc gap) | psi (acc gap) |", "|---|---|---|---|---|---|---|"]
    for key, label in MEASURES:
        cl, ca = c[key]["gap_loss"], c[key]["gap_acc"]
        lines.append(f"| {label} | {_f(cl['tau'])} | {_f(cl['rho'])} | {_f(cl['psi'])} | "
                     f"{_f(ca['tau'])} | {_f(ca['rho'])} | {_f(ca['psi'])} |")
    clean = [r for r in records if r["axis"] != "label_noise"]
    fitted = [r for r in records if r["train_acc"] >= FITTED_ACC]
    cc, cf = correlations(clean), correlations(fitted)
    lines += [] if len(clean) == len(records) else ["", "#### Subsets", "",
              f"Without the label-noise runs ({len(clean)} models; their training loss is "
              f"measured on their noisy labels), and only the fitted runs (train accuracy >= "
              f"{FITTED_ACC}, {len(fitted)} models).", "",
              "| measure | tau (loss gap), no noise | tau (acc gap), no noise "
              "| tau (loss gap), fitted | rho (loss gap), fitted | tau (acc gap), fitted |",
              "|---|---|---|---|---|---|"]
    for key, label in MEASURES if len(clean) < len(records) else ():
        lines.append(f"| {label} | {_f(cc[key]['gap_loss']['tau'])} | "
                     f"{_f(cc[key]['gap_acc']['tau'])} | {_f(cf[key]['gap_loss']['tau'])} | "
                     f"{_f(cf[key]['gap_loss']['rho'])} | {_f(cf[key]['gap_acc']['tau'])} |")
    for gap, glabel in GAPS:
        axes = [a for a in AXES if any(a in c[k][gap]["axes"] for k, _ in MEASURES)]
        lines += ["", f"#### Granulated Kendall tau per hyper-parameter, gap = {glabel}", "",
                  "Each cell: tau within {base, the axis's variants}, averaged over seeds.", "",
                  "| measure | " + " | ".join(axes) + " | psi |",
                  "|---|" + "---|" * (len(axes) + 1)]
        for key, label in MEASURES:
            row = c[key][gap]
            lines.append(f"| {label} | " + " | ".join(_f(row["axes"].get(a)) for a in axes)
                         + f" | {_f(row['psi'])} |")
    stop = any(r["reached"] is not None for r in runs)
    lines += ["", "#### The runs", "",
              "Means over seeds, of all runs (train loss and accuracy on each run's own, possibly "
              "noisy, training set).", "",
              "| run | train loss | test loss | train acc | test acc | conv kappa | conv trace |"
              + (" reached |" if stop else ""), "|---|---|---|---|---|---|---|" + "---|" * stop]
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["name"].rsplit("-s", 1)[0], []).append(r)
    for name, rs in groups.items():
        mean = {k: np.mean([r[k] for r in rs]) for k in
                ("train_loss", "test_loss", "train_acc", "test_acc")}
        mk = {k: np.mean([r["measures"][k] for r in rs]) for k in ("conv_kappa", "conv_trace")}
        lines.append(f"| {name} | {mean['train_loss']:.4f} | {mean['test_loss']:.4f} | "
                     f"{mean['train_acc']:.4f} | {mean['test_acc']:.4f} | "
                     f"{mk['conv_kappa']:.4g} | {mk['conv_trace']:.4g} |"
                     + (f" {sum(r['reached'] for r in rs)}/{len(rs)} |" if stop else ""))
    return "\n".join(lines) + "\n"


def render_reparam(reparam: list[dict]) -> str:
    """Markdown table of the reparameterization check: ratios after / before."""
    lines = ["### Reparameterization check", "",
             "Each transformation leaves the network function unchanged (max |Δ logit| "
             "on the training set shown); cells are measure(transformed) / "
             "measure(original). A ratio of 1.0000 means the measure did not move.", "",
             "| measure | " + " | ".join(t["name"] for t in reparam) + " |",
             "|---|" + "---|" * len(reparam),
             "| max abs logit change | " + " | ".join(f"{t['max_logit_diff']:.1e}"
                                                   for t in reparam) + " |"]
    for key, label in MEASURES:
        lines.append(f"| {label} | " + " | ".join(_ratio(t, key) for t in reparam) + " |")
    return "\n".join(lines) + "\n"


def _ratio(t, key) -> str:
    if key.startswith("log_"):  # a log of a product: show the product's ratio
        return f"×{math.exp(t['after'][key] - t['before'][key]):.4f}"
    return f"×{t['after'][key] / t['before'][key]:.4f}"


# ---------------------------------------------------------------- reparameterization

def _positive_scales(n: int, seed: int) -> torch.Tensor:
    """n factors log-uniform in [1/4, 4]."""
    g = torch.Generator().manual_seed(seed)
    return torch.exp((torch.rand(n, generator=g) * 2 - 1) * math.log(4.0))


def reparameterizations(model: DigitsCNN):
    """[(name, transformed copy)]: function-preserving rescalings (ReLU is positively
    homogeneous, BN is affine per channel in eval mode)."""
    w = model.conv2.out_channels
    out = []
    for name, lam in (("last-conv filters ×λ_j, classifier columns ÷λ_j", _positive_scales(w, 1)),
                      ("features ×4, classifier ÷4", torch.full((w,), 4.0))):
        m = _copy(model)
        with torch.no_grad():  # BN's affine output (hence the folded filter j) scales by lam_j
            m.bn.weight.mul_(lam)
            m.bn.bias.mul_(lam)
            m.fc.weight.div_(lam[None, :])
        out.append((name, m))
    m = _copy(model)
    lam = _positive_scales(model.conv1.out_channels, 2)
    with torch.no_grad():  # first conv's filter j ×lam_j, last conv's input channel j ÷lam_j
        m.conv1.weight.mul_(lam[:, None, None, None])
        m.conv1.bias.mul_(lam)
        m.conv2.weight.div_(lam[None, :, None, None])
    out.append(("first-conv filters ×λ_j, last-conv input channels ÷λ_j", m))
    return out


def _copy(model: DigitsCNN) -> DigitsCNN:
    m = DigitsCNN(model.conv1.out_channels)
    m.load_state_dict(model.state_dict())
    return m.eval()


def reparam_check(data, workdir: Path, seed: int = 0) -> list[dict]:
    xtr, ytr, _, _ = data
    model = fit(Config(), seed, xtr, ytr)
    export(model, workdir / "orig.onnx", xtr)
    before = measures(model, workdir / "orig.onnx", xtr, ytr)
    with torch.no_grad():
        ref = model(torch.from_numpy(xtr))
    rows = []
    for i, (name, m) in enumerate(reparameterizations(model)):
        path = workdir / f"reparam{i}.onnx"
        export(m, path, xtr)
        with torch.no_grad():
            diff = (m(torch.from_numpy(xtr)) - ref).abs().max().item()
        rows.append({"name": name, "max_logit_diff": diff, "before": before,
                     "after": measures(m, path, xtr, ytr)})
    return rows


# ---------------------------------------------------------------- plot and document

def plot(records: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("conv_kappa", "conv_trace", "clf_kappa", "hutchinson_trace", "kernel_fro2",
            "log_prod_spec")
    labels = dict(MEASURES)
    c = correlations(records)
    fig, axs = plt.subplots(2, 3, figsize=(12, 7.5))
    colors = dict(zip(["base", *AXES], plt.cm.tab10.colors))
    for ax, key in zip(axs.flat, keys):
        for axis, col in colors.items():
            rs = [r for r in records if r["axis"] == axis]
            if rs:
                ax.scatter([r["measures"][key] for r in rs], [r["gap_loss"] for r in rs],
                           s=16, color=col, label=axis, linewidths=0.8,
                           edgecolors=["k" if r["train_acc"] >= FITTED_ACC else "none"
                                       for r in rs])
        if not key.startswith("log_") and all(r["measures"][key] > 0 for r in records):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        cl = c[key]["gap_loss"]
        ax.set_title(f"{labels[key]}\ntau {_f(cl['tau'])}, psi {_f(cl['psi'])}", fontsize=9)
        ax.set_ylabel("test - train loss", fontsize=8)
        ax.tick_params(labelsize=7)
    axs.flat[0].legend(fontsize=7, title="varied", title_fontsize=7)
    fig.suptitle(f"Each point one model; black edge: fitted (train accuracy >= {FITTED_ACC})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


BEGIN, END = "<!-- study:begin (generated by tools/study.py) -->", "<!-- study:end -->"


def write_doc(path: Path, body: str) -> None:
    """Replace the generated block of ``path`` (or create the file); text around it is kept."""
    text = path.read_text() if path.exists() else f"# Study\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    path.write_text(f"{head}{BEGIN}\n{body}{END}{rest.split(END, 1)[1]}")


def results_digest(results: dict) -> str:
    """sha256 prefix of the canonical JSON of the results (the text of study.json)."""
    return hashlib.sha256(_dumps(results).encode()).hexdigest()[:16]


def _dumps(results: dict) -> str:
    return json.dumps(results, indent=1, sort_keys=True) + "\n"


def render_block(results: dict) -> str:
    """The generated block of study.md: a pure function of the results."""
    meta = (f"Generated by `{results['command']}` on {results['date']} (seeds "
            f"{results['seeds']}, {results['platform']}, {results['seconds']:.0f} s on one "
            f"thread). Raw results: `study.json`, sha256 prefix `{results_digest(results)}`.\n\n")
    parts = [meta]
    for key, proto in PROTOCOLS.items():
        records = [r for r in results["records"] if r["protocol"] == key]
        if records:
            parts.append(f"### {proto.title}\n\n" + render_protocol(records)
                         + f"\n![measures vs generalization gap, {key}]({proto.plot})\n\n")
    if results["reparam"]:
        parts.append(render_reparam(results["reparam"]))
    return "".join(parts)


def write_outputs(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(_dumps(results))
    write_doc(out / "study.md", render_block(results))
    for key, proto in PROTOCOLS.items():
        records = [r for r in results["records"]
                   if r["protocol"] == key and r["reached"] is not False]
        if records:
            plot(records, out / proto.plot)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 cheap models, no reparam check")
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0..N-1")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--models", type=Path, default=None,
                    help="copy a few seed-0 models here (default: models/family, none if --quick)")
    ap.add_argument("--render", action="store_true",
                    help="no training: redo study.md's block and study.png from <out>/study.json")
    args = ap.parse_args(argv)
    if args.render:
        results = json.loads((args.out / "study.json").read_text())
        write_outputs(results, args.out)
        return results
    if args.models is None and not args.quick:
        args.models = ROOT / "models" / "family"
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    data = digits_split()
    runs = family(range(args.seeds), quick=args.quick)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(runs):
            records.append(run_one(run, data, Path(tmp)))
            print(f"[{i + 1}/{len(runs)}] {records[-1]['name']}: gap {records[-1]['gap_loss']:.4f}"
                  f" kappa {records[-1]['measures']['conv_kappa']:.4g}", flush=True)
        reparam = None if args.quick else reparam_check(data, Path(tmp))
        if args.models:
            args.models.mkdir(parents=True, exist_ok=True)
            for run in (Run("epochs", a, v, 0) for a, v in SHIPPED):
                shutil.copy(Path(tmp) / f"{run.name}.onnx", args.models / f"{run.name[:-3]}.onnx")
    command = "python tools/study.py" + (" " + " ".join(argv if argv is not None
                                                        else sys.argv[1:])).rstrip()
    results = {"command": command, "date": datetime.date.today().isoformat(),
               "seconds": time.time() - t0,
               "platform": f"torch {torch.__version__}, numpy {np.__version__}, "
                           f"onnxruntime {ort_version()}, {platform.machine()}",
               "seeds": sorted({r["seed"] for r in records}),
               "config": dataclasses.asdict(Config()), "axes": AXES, "records": records,
               "reparam": reparam}
    write_outputs(results, args.out)
    print(f"wrote {args.out / 'study.md'} in {time.time() - t0:.0f} s")
    return results


def ort_version() -> str:
    import onnxruntime
    return onnxruntime.__version__


if __name__ == "__main__":
    main()
