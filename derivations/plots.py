"""The report's figures. matplotlib is imported lazily, with the Agg backend, and PNGs are written
without the Software metadata so that identical data gives byte-identical files."""

from pathlib import Path

import numpy as np

from derivations.checks import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir, filename):
    plt = _pyplot()
    path = Path(out_dir) / filename
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def scalar_figure(data, out_dir):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.6))
    T = data["T"]
    colors = {0.9: "tab:blue", 1.0: "tab:green", 1.1: "tab:red"}
    for w, ref in data["reference"].items():
        ax.semilogy(T, np.abs(ref), color=colors[w], lw=1.6, label=f"w = {w}: symbolic $T w^{{T-1}} h_0$")
        every = slice(4, None, 10)
        ax.semilogy(T[every], np.abs(data["measured"][("identity", w)][every]), "o", ms=4, mfc="none",
                    color=colors[w], label=f"w = {w}: kernel, identity")
        every = slice(9, None, 10)
        ax.semilogy(T[every], np.abs(data["measured"][("relu", w)][every]), "x", ms=5, color=colors[w],
                    label=f"w = {w}: kernel, relu")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(r"$|\partial h_T / \partial w|$")
    ax.set_title(rf"Scalar recurrence $h_t = w\,h_{{t-1}}$, $h_0 = {data['h0']}$: "
                 "vanishing, steady, exploding")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, out_dir, "scalar_recurrence.png")
    return Figure("scalar_recurrence.png",
                  "|dh_T/dw| against T for w = 0.9, 1.0, 1.1: the symbolic closed form T w^(T-1) h0 (lines) "
                  "and the kernel's BPTT gradient (markers; identity and relu).")


def gradient_norms_figure(data, out_dir):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    styles = {"Elman tanh": ("tab:red", "-"), "LSTM": ("tab:blue", "-"),
              "LSTM (cell state c)": ("tab:blue", ":"), "GRU": ("tab:green", "-")}
    for label, norms in data["curves"].items():
        color, ls = styles[label]
        t = np.arange(len(norms))
        keep = norms > 0
        ax.semilogy(t[keep], norms[keep], ls, color=color, lw=1.6, label=label)
    T = len(next(iter(data["curves"].values()))) - 1
    ax.set_xlabel("t (state after t steps; the loss reads the last state only)")
    ax.set_ylabel(r"$\|\partial L / \partial h_t\|$")
    ax.set_title(f"Per-step gradient norms, same {T} characters, H = {data['hidden']}, default init")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out_dir, "hidden_gradient_norms.png")
    return Figure("hidden_gradient_norms.png",
                  "||dL/dh_t|| per step for Elman (tanh), LSTM and GRU layers on the same sequence, read "
                  "from the layers' backward with rnncore.diagnostics.hidden_state_gradients (the LSTM's "
                  "||dL/dc_t|| dotted).")


def autoencoder_figure(data, out_dir):
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    labels = {"untied": "untied", "weight_decay": f"weight decay {data['lam']}", "tied": "tied"}
    colors = {"untied": "tab:blue", "weight_decay": "tab:orange", "tied": "tab:green"}
    for mode, hist in data["history"].items():
        ax1.semilogy(hist["step"], np.maximum(hist["angle"], 1e-17), color=colors[mode], lw=1.5,
                     label=labels[mode])
        optimum = data["reg_loss"] if mode == "weight_decay" else data["pca_loss"]
        excess = np.maximum((hist["loss"] - optimum) / optimum, 1e-17)
        ax2.semilogy(hist["step"], excess, color=colors[mode], lw=1.5,
                     label=labels[mode] + (" (vs its own optimum)" if mode == "weight_decay" else ""))
    ax1.axhline(1e-3, color="gray", ls="--", lw=1, label="bound 1e-3 rad")
    ax1.set_xlabel("gradient-descent step")
    ax1.set_ylabel("largest principal angle (rad)")
    ax1.set_title(f"Decoder columns vs top-{data['k']} eigenvectors")
    ax1.legend(fontsize=8)
    ax1.grid(True, alpha=0.3)
    ax2.set_xlabel("gradient-descent step")
    ax2.set_ylabel("(loss - optimum) / optimum")
    ax2.set_title(f"Loss against the PCA optimum ({data['pca_loss']:.4f})")
    ax2.legend(fontsize=8)
    ax2.grid(True, alpha=0.3)
    _save(fig, out_dir, "autoencoder.png")
    return Figure("autoencoder.png",
                  "Linear autoencoder on the digits: the largest principal angle between the decoder's "
                  "columns and the covariance's top-k eigenvectors, and the loss relative to the PCA "
                  "reconstruction error (weight decay: relative to its own optimum), per gradient-descent "
                  "step; values at or below 0 (rounding) are drawn at 1e-17.")


def init_figure(data, out_dir):
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    colors = {1.5: "tab:blue", 2.0: "tab:green", 3.0: "tab:red"}
    T = data["steps"]
    t = np.arange(T + 1)
    for g, d in data["gains"].items():
        c = colors[g]
        logs = np.log(d["h"])
        ax1.semilogy(t, np.exp(logs.mean(axis=(0, 2))), color=c, lw=1.6, label=f"g = {g}: measured")
        lo, hi = np.percentile(logs.reshape(-1, T + 1) if logs.ndim == 2 else
                               logs.transpose(0, 2, 1).reshape(-1, T + 1), [10, 90], axis=0)
        ax1.fill_between(t, np.exp(lo), np.exp(hi), color=c, alpha=0.15, lw=0)
        ax1.semilogy(t, (g / 2) ** t, "--", color=c, lw=1, label=f"g = {g}: $(g/2)^t$")
        logs = np.log(d["grad"])
        ax2.semilogy(t, np.exp(logs.mean(axis=(0, 2))), color=c, lw=1.6, label=f"g = {g}: measured")
        ax2.semilogy(t, (g / 2) ** (T - t), "--", color=c, lw=1, label=f"g = {g}: $(g/2)^{{T-t}}$")
    ax1.set_xlabel("step t")
    ax1.set_ylabel(r"$\|h_t\|^2 / \|h_0\|^2$ (geometric mean, 10-90 %)")
    ax1.set_title(f"Hidden state, ReLU RNN, n = {data['n']}, $W \\sim N(0, g/n)$")
    ax1.legend(fontsize=7.5, ncol=2)
    ax1.grid(True, alpha=0.3)
    ax2.set_xlabel("step t")
    ax2.set_ylabel(r"$\|\partial L/\partial h_t\|^2 / \|\partial L/\partial h_T\|^2$ (geometric mean)")
    ax2.set_title(r"Gradient per step, $L = \langle h_T, G\rangle$")
    ax2.legend(fontsize=7.5, ncol=2)
    ax2.grid(True, alpha=0.3)
    _save(fig, out_dir, "init_study.png")
    return Figure("init_study.png",
                  "Initialisation study: squared norms of the hidden state (left) and of dL/dh_t (right) per "
                  "step, measured (geometric mean over seeds and sequences; band: 10-90 % of sequences) "
                  "against the prediction (g/2)^t (dashed).")
