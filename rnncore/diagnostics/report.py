"""``rnncore diagnose RUN_DIR``: the diagnostics of a trained run as PNG plots, JSON and a report.

``diagnose_run`` loads the run's checkpoint, reads its held-out data, runs ``diagnose_model`` and
the training history (``metrics.jsonl``: pre-clip gradient norms and clip events;
``diagnostics.jsonl`` when the run was trained with ``--diagnose-every``), and writes into the
output directory: ``gradient_flow.png``, ``singular_values.png``, ``saturation.png``,
``training.png`` (when there is a history), ``diagnostics.json`` and ``report.md`` /
``report.html`` (``rnncore.report``). matplotlib (Agg) is imported only here.
"""

import json
from pathlib import Path

import numpy as np

from rnncore.diagnostics.gradients import VERDICT_THRESHOLDS
from rnncore.diagnostics.run import diagnose_model, write_json
from rnncore.threads import blas_threads

__all__ = ["diagnose_run"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    _pyplot().close(fig)
    return Path(path)


def _label(name, item, num_layers, bidirectional):
    parts = [name]
    if num_layers > 1:
        parts.append(f"layer {item['layer']}")
    if bidirectional:
        parts.append(item["direction"])
    return " ".join(parts)


def plot_gradient_flow(result, path):
    """Left: ||dh_T/ds_(T-k)||_2 against k (median and range over the sequences), with the verdict
    thresholds. Right: ||dL/dh_t|| (and ||dL/dc_t||) per step t of the top layer."""
    plt = _pyplot()
    many = sum(len(item.get("grad_norms", {})) for info in result["layers"].values()
               for item in info["directions"]) > 3
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13.5 if many else 11, 4.2))
    for name, info in result["layers"].items():
        for item in info["directions"]:
            label = _label(name, item, info["num_layers"], info["bidirectional"]) + f" ({info['cell']})"
            spec = np.asarray(item["jacobian"]["spectral"])[::-1]  # k = 0..T steps back from T
            k = np.arange(spec.shape[0])
            line, = ax1.semilogy(k, np.median(spec, axis=1), label=label)
            if spec.shape[1] > 1:
                ax1.fill_between(k, spec.min(axis=1), spec.max(axis=1), color=line.get_color(), alpha=0.2)
            color = None  # h solid, c dashed, in one colour per layer
            for state, norms in item.get("grad_norms", {}).items():
                norms = np.where(np.asarray(norms) > 0, norms, np.nan)  # an exact 0 (e.g. dL/dc_T) not drawn
                drawn, = ax2.semilogy(np.arange(len(norms)), norms, label=f"{label}: dL/d{state}_t",
                                      linestyle="-" if state == "h" else "--", color=color)
                color = drawn.get_color()
    low, high = ax1.get_ylim()  # both thresholds in view, underflow to 1e-45 not
    ax1.set_ylim(min(max(low, 1e-12), 0.1 * VERDICT_THRESHOLDS["vanish"]),
                 max(high, 10 * VERDICT_THRESHOLDS["explode"]))
    for value, text, offset in ((VERDICT_THRESHOLDS["explode"], "exploding above", -10),
                                (VERDICT_THRESHOLDS["vanish"], "vanished below", 3)):
        ax1.axhline(value, color="grey", linestyle=":", linewidth=1)
        ax1.annotate(f"{text} {value:g}", (1, value), xycoords=("axes fraction", "data"),
                     textcoords="offset points", xytext=(-4, offset), ha="right", fontsize=8, color="grey")
    ax1.set_xlabel("k (steps back from the last step T)")
    ax1.set_ylabel("||dh_T / ds_(T-k)||_2 (largest singular value)")
    ax1.set_title("Jacobian of the last state w.r.t. earlier states")
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("t (state after t steps)")
    ax2.set_ylabel("gradient norm over the batch")
    ax2.set_title("Loss gradient per step, top layer")
    ax2.grid(alpha=0.3, which="both")
    if len(ax2.lines) > 3:  # outside, to the right, so that it hides no curve
        ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    elif ax2.lines:
        ax2.legend(fontsize=8)
    else:
        ax2.text(0.5, 0.5, "no loss gradient reaches this layer", ha="center", transform=ax2.transAxes)
    return _save(fig, path)


def plot_singular_values(result, path):
    """Singular values of W_hh (descending) per layer, direction and gate block; a line at 1."""
    plt = _pyplot()
    panels = [(name, info, key) for name, info in result["layers"].items()
              for key in sorted({(s["layer"], s["direction"]) for s in info["spectra"]},
                                key=lambda k: (k[0], k[1] != "forward"))]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.0), squeeze=False)
    for ax, (name, info, (layer, direction)) in zip(axes[0], panels):
        for s in info["spectra"]:
            if (s["layer"], s["direction"]) != (layer, direction):
                continue
            sv = s["singular_values"]
            radius = f", radius {s['spectral_radius']:.2f}" if s["spectral_radius"] is not None else ""
            ax.semilogy(np.arange(1, len(sv) + 1), sv, ".-" if len(sv) <= 64 else "-", markersize=3,
                        label=f"{s['block']} {s['shape'][0]}x{s['shape'][1]}: max {s['sigma_max']:.2f}, "
                              f"min {s['sigma_min']:.2g}{radius}")
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("index")
        ax.set_ylabel("singular value of W_hh")
        ax.set_title(_label(name, {"layer": layer, "direction": direction}, info["num_layers"],
                            info["bidirectional"]) + f" ({info['cell']})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_saturation(result, path):
    """Histograms of each gate's activations, one row per (layer, direction), one column per gate."""
    plt = _pyplot()
    rows = []
    for name, info in result["layers"].items():
        keys = sorted({(s["layer"], s["direction"]) for s in info["saturation"]},
                      key=lambda k: (k[0], k[1] != "forward"))
        for key in keys:
            gates = [s for s in info["saturation"] if (s["layer"], s["direction"]) == key]
            rows.append((name, info, key, gates))
    cols = max(len(r[3]) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.2 * cols, 2.8 * len(rows)), squeeze=False)
    for r, (name, info, (layer, direction), gates) in enumerate(rows):
        where = _label(name, {"layer": layer, "direction": direction}, info["num_layers"],
                       info["bidirectional"])
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(gates):
                ax.axis("off")
                continue
            s = gates[c]
            edges = np.asarray(s["edges"])
            frac = np.asarray(s["hist"]) / max(s["count"], 1)
            ax.bar(edges[:-1], frac, width=np.diff(edges), align="edge", color="C0", edgecolor="none")
            near1 = "" if s["near_1"] is None else f", near 1: {s['near_1']:.1%}"
            mag = "|a| " if s["kind"] == "tanh" else ""
            ax.set_title(f"{where}: {s['gate']} ({s['kind']})\n{mag}near 0: {s['near_0']:.1%}{near1}",
                         fontsize=9)
            ax.set_xlabel("activation")
            if c == 0:
                ax.set_ylabel("fraction")
    return _save(fig, path)


def _step_records(metrics):
    return [r for r in metrics if "loss" in r and "grad_norm" in r]


def _clip_events(metrics):
    return [r for r in metrics if r.get("clipped")]


def plot_training(metrics, diagnostics, clip, path):
    """Pre-clip gradient norm over training (at every logged step, and at every clipped step) and the
    clip threshold; with diagnostics records, sigma_max of each W_hh block."""
    plt = _pyplot()
    steps, events = _step_records(metrics), _clip_events(metrics)
    two = bool(diagnostics)
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(11 if two else 6, 4.0), squeeze=False)
    ax = axes[0][0]
    ax.semilogy([r["step"] for r in steps], [r["grad_norm"] for r in steps],
                label="pre-clip norm, logged steps")
    if events:
        ax.semilogy([r["step"] for r in events], [r["grad_norm"] for r in events], "rv", markersize=4,
                    label=f"clipped steps ({len(events)}), their pre-clip norm")
    if clip:
        ax.axhline(clip, color="red", linestyle="--", linewidth=1, label=f"clip threshold {clip:g}")
    ax.set_xlabel("step")
    ax.set_ylabel("global gradient norm")
    ax.set_title("Gradient norm during training")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if two:
        ax = axes[0][1]
        series = {}
        for rec in diagnostics:
            for name, info in rec.items():
                if not isinstance(info, dict) or "spectra" not in info:
                    continue
                for s in info["spectra"]:
                    key = f"{name} l{s['layer']} {s['direction']} {s['block']}"
                    series.setdefault(key, []).append((rec["step"], s["sigma_max"]))
        for key, pts in series.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ".-", label=key)
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("step")
        ax.set_ylabel("largest singular value of W_hh")
        ax.set_title("W_hh during training (diagnostics.jsonl)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _read_jsonl(path):
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _fmt(v):
    return "-" if v is None else f"{v:.3g}"


def diagnose_run(run_dir, out_dir=None, steps=100, sequences=4, split="valid", echo=print):
    """Diagnose the run in ``run_dir`` on its held-out data; write plots, JSON and a report to
    ``out_dir`` (default ``run_dir/diagnostics``). Returns (the ``diagnose_model`` result, the paths)."""
    from rnncore.train.checkpoint import load_model
    from rnncore.train.runs import TASKS, find_checkpoint, read_run_config

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "diagnostics"
    config = read_run_config(run_dir)
    if config.get("task") in ("tag", "seq2seq"):
        import rnncore.models.sequence_tasks  # noqa: F401  (registers the tasks)
    model = load_model(find_checkpoint(run_dir))
    task = TASKS.get(config.get("task"))
    if task is None or task["data"] is None:
        raise ValueError(f"{run_dir}: task {config.get('task')!r} has no built-in held-out data to "
                         "diagnose on")
    valid, test = task["data"](config, model)
    source = valid if split == "valid" else test
    with blas_threads(config.get("blas_threads", 1)):  # as in training: see docs/reliability.md, "Threads"
        result = diagnose_model(model, source.batches(0), steps=steps, sequences=sequences)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = _read_jsonl(run_dir / "metrics.jsonl")
    history = _read_jsonl(run_dir / "diagnostics.jsonl")
    paths = {"gradient_flow": plot_gradient_flow(result, out_dir / "gradient_flow.png"),
             "singular_values": plot_singular_values(result, out_dir / "singular_values.png"),
             "saturation": plot_saturation(result, out_dir / "saturation.png")}
    if _step_records(metrics):
        paths["training"] = plot_training(metrics, history, config.get("clip"), out_dir / "training.png")
    verdict = result["verdict"]
    summary = {"run": str(run_dir), "verdict": verdict["line"], "where": verdict["where"],
               "thresholds": VERDICT_THRESHOLDS, "layers": result["layers"],
               "training": _training_summary(metrics, config.get("clip"))}
    write_json(out_dir / "diagnostics.json", summary)
    report = _report(run_dir, config, result, summary, paths, steps, sequences)
    md, html = report.write(out_dir)
    paths.update(markdown=md, html=html, json=out_dir / "diagnostics.json")
    echo(f"verdict: {verdict['line']} [{verdict['where']}]")
    echo(f"diagnostics: {out_dir} ({', '.join(p.name for p in paths.values())})")
    return result, paths


def _training_summary(metrics, clip):
    steps, events = _step_records(metrics), _clip_events(metrics)
    if not steps:
        return None
    norms = [r["grad_norm"] for r in steps + events]
    return {"records": len(steps), "last_step": steps[-1]["step"], "grad_norm_last": steps[-1]["grad_norm"],
            "grad_norm_max": max(norms),
            "grad_norm_median": float(np.median([r["grad_norm"] for r in steps])),
            "clip": clip, "clipped_steps": len(events) if clip else None}


def _report(run_dir, config, result, summary, paths, steps, sequences):
    from rnncore.report import Report

    rep = Report(f"Gradient-flow diagnostics: {run_dir}")
    verdict = result["verdict"]
    th = VERDICT_THRESHOLDS
    rep.paragraph(f"**Verdict**: {verdict['line']} (in {verdict['where']}).")
    rep.paragraph(
        f"Task `{config.get('task')}`, cell `{config.get('cell')}`, hidden size {config.get('hidden_size')}, "
        f"{config.get('num_layers')} layer(s). Measured on the run's held-out data in eval mode. "
        f"g(k) = ||dh_T/ds_(T-k)||_2 is the largest singular value of the Jacobian of the last hidden state "
        f"with respect to the whole state k steps earlier (h, and c for an LSTM), computed exactly from the "
        f"layers' backward for {sequences} sequence(s) over T = {steps} steps or fewer. Thresholds: "
        f"exploding if g(k) > {th['explode']:g} for some k, vanishing after k steps if g(k) < "
        f"{th['vanish']:g} first at k, else healthy.")
    rows = []
    for name, info in result["layers"].items():
        for item in info["directions"]:
            v = item["verdict"]
            g = v["gain"]
            k10 = min(10, len(g) - 1)
            g_h = np.median(np.asarray(item["jacobian"]["spectral_h"]), axis=1)[::-1]
            rows.append([_label(name, item, info["num_layers"], info["bidirectional"]), v["verdict"],
                         "-" if v["k"] is None else str(v["k"]), f"{g[1]:.3g}", f"{g[k10]:.3g}",
                         f"{g_h[k10]:.3g}", f"{g[-1]:.3g} (k = {len(g) - 1})", f"{v['rate']:.3g}"])
    rep.heading("Gradient flow")
    rep.paragraph("g_h(k) = ||dh_T/dh_(T-k)||_2 with the cell state held fixed (the same as g(k) "
                  "without one).")
    rep.table(["layer", "verdict", "k", "g(1)", "g(10)", "g_h(10)", "g(T)", "factor per step"], rows)
    rep.figure(paths["gradient_flow"], "Left: g(k) (median over sequences, band: range). Right: ||dL/dh_t|| "
               "per step of the top layer, from the gradient the model's loss sends into it.")
    rep.heading("Recurrent weights")
    rows = [[f"{name} l{s['layer']} {s['direction']}", s["block"], f"{s['shape'][0]}x{s['shape'][1]}",
             _fmt(s["sigma_max"]), _fmt(s["sigma_min"]), _fmt(s["condition"]), _fmt(s["spectral_radius"])]
            for name, info in result["layers"].items() for s in info["spectra"]]
    rep.table(["layer", "block", "shape", "sigma_max", "sigma_min", "condition", "spectral radius"], rows)
    rep.figure(paths["singular_values"], "Singular values of W_hh, whole and per gate block.")
    rep.heading("Gate saturation")
    rows = [[f"{name} l{s['layer']} {s['direction']}", s["gate"], s["kind"], f"{s['near_0']:.1%}",
             "-" if s["near_1"] is None else f"{s['near_1']:.1%}", f"{s['mean']:.3f}"]
            for name, info in result["layers"].items() for s in info["saturation"]]
    rep.table(["layer", "gate", "kind", "within 0.01 of 0", "within 0.01 of 1", "mean"], rows)
    rep.figure(paths["saturation"], "Histograms of the gate activations on the held-out data (tanh gates "
               "are counted by |a|).")
    tr = summary["training"]
    if tr is not None:
        rep.heading("Training")
        clipped = (f"; {tr['clipped_steps']} of {tr['last_step']} steps clipped at {tr['clip']:g}"
                   if tr["clipped_steps"] is not None else "; no clipping")
        rep.paragraph(f"{tr['records']} metrics records up to step {tr['last_step']}: pre-clip gradient norm "
                      f"at the logged steps median {tr['grad_norm_median']:.3g}, last "
                      f"{tr['grad_norm_last']:.3g}; "
                      f"largest logged or clipped {tr['grad_norm_max']:.3g}{clipped}.")
        rep.figure(paths["training"], "Pre-clip global gradient norm during training: at the logged steps, "
                   "and at every clipped step.")
    return rep
