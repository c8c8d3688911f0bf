"""The linear autoencoder and PCA, on real data (scikit-learn's 8x8 digits, shipped offline).

Encoder z = W x (W: k x d, ``rnncore.Linear(d, k, bias=False)``), decoder x' = V z (V: d x k,
``Linear(k, d, bias=False)``), loss L = 1/(2N) sum_n ||x_n - V W x_n||^2 (+ lambda/2 (||W||^2 + ||V||^2)).

What holds, stated precisely (Baldi & Hornik 1989; Kunin et al. 2019 for weight decay):

- Without regularisation, the minima are V W = P_U, the projector onto the top-k principal
  subspace U of the covariance C = X^T X / N, with loss 1/2 sum_(i>k) sigma_i (the PCA error). They
  form a family: W = A U^T, V = U A^-1 for any invertible k x k matrix A. So V = W^T only when A is
  orthogonal, i.e. when W W^T = V^T V = I. Gradient flow conserves the imbalance Q = W W^T - V^T V
  (d/dt W W^T = d/dt V^T V for any loss of V W), so an unbalanced initialisation stays unbalanced:
  at the optimum, with q_i the eigenvalues of Q, ||V - W^T||_F^2 = sum_i (sqrt(q_i^2 + 4) - 2),
  which is 0 exactly when Q = 0.
- With weight decay lambda the imbalance decays as exp(-2 lambda t); every critical point is
  balanced, V = W^T, and for lambda < sigma_k the minimum is W = D U^T R (R orthogonal) with
  D = diag(sqrt(1 - lambda / sigma_i)): same subspace, shrunk.
- With tied weights (V = W^T by construction) the minimum has orthonormal rows, W W^T = I, and the
  PCA error.

The data: the 61 pixels of the digits that vary, each standardised, all divided by the square
root of the largest covariance eigenvalue (so that sigma_1 = 1 and one learning rate fits); the
three zero-variance pixels are dropped because the encoder's component along a direction the
data never takes receives no gradient and would keep its initial value forever.
"""

import numpy as np
import sympy as sp
from scipy.linalg import subspace_angles

from derivations import symbolic as S
from derivations.checks import DerivationResult, array_check, bound_check, value_check
from rnncore.nn.layers import Linear

FAMILY = "autoencoder"
K = 4
GRAD_TOLERANCE = 1e-12
ANGLE_BOUND = 1e-3


def digits():
    """The standardised digits (N, 61), scaled so the largest covariance eigenvalue is 1."""
    from sklearn.datasets import load_digits

    X = load_digits().data.astype(np.float64)
    X = X[:, X.std(axis=0) > 0]
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    top = np.linalg.eigvalsh(X.T @ X / len(X))[-1]
    return X / np.sqrt(top)


def pca(X):
    """Eigenvalues (descending) and eigenvectors (columns) of X^T X / N."""
    sigma, U = np.linalg.eigh(X.T @ X / len(X))
    return sigma[::-1], U[:, ::-1]


class Autoencoder:
    """Two rnncore.Linear layers (float64, no bias) and the loss 1/(2N) ||X - X W^T V^T||^2."""

    def __init__(self, d, k, seed):
        self.encoder = Linear(d, k, bias=False, dtype=np.float64, seed=seed)
        self.decoder = Linear(k, d, bias=False, dtype=np.float64, seed=seed + 1)

    @property
    def W(self):
        """The encoder's live weight (k, d)."""
        return dict(self.encoder.named_parameters())["weight"]

    @property
    def V(self):
        """The decoder's live weight (d, k)."""
        return dict(self.decoder.named_parameters())["weight"]

    def loss_and_grads(self, X, n=None):
        """Reconstruction loss 1/(2n) ||X - X W^T V^T||^2 (n = len(X) unless given), dL/dW and dL/dV,
        through the layers' forward and backward."""
        n = len(X) if n is None else n
        self.encoder.zero_grad()
        self.decoder.zero_grad()
        residual = self.decoder(self.encoder(X)) - X
        loss = float(np.sum(residual * residual)) / (2 * n)
        self.encoder.backward(self.decoder.backward(residual / n))  # dL/d(reconstruction) = residual / n
        return loss, self.encoder.grads["weight"], self.decoder.grads["weight"]


def train(X, mode, steps, lr, lam=0.0, seed=0, record_every=10, U_k=None, n=None):
    """Plain gradient descent. mode: 'untied', 'weight_decay' or 'tied' (V := W^T after every step,
    gradient dL/dW + (dL/dV)^T). n: the number of samples the loss averages over (len(X) unless
    given). Returns the model, the initial (W, V) and a history."""
    d = X.shape[1]
    model = Autoencoder(d, K, seed)
    W, V = model.W, model.V
    if mode == "tied":
        V[...] = W.T
    W0, V0 = W.copy(), V.copy()
    history = {"step": [], "loss": [], "angle": []}
    for step in range(steps + 1):
        loss, gW, gV = model.loss_and_grads(X, n)
        if not np.isfinite(loss):
            raise FloatingPointError(f"{mode}: loss {loss} at step {step}")
        if step % record_every == 0 or step == steps:
            reg = 0.5 * lam * (np.sum(W * W) + np.sum(V * V))
            history["step"].append(step)
            history["loss"].append(loss + reg)
            history["angle"].append(float(np.max(subspace_angles(V, U_k))) if U_k is not None else np.nan)
        if step == steps:
            break
        if mode == "tied":
            W -= lr * (gW + gV.T)
            V[...] = W.T
        else:
            gW = gW + lam * W
            gV = gV + lam * V
            W -= lr * gW
            V -= lr * gV
    return model, (W0, V0), {key: np.array(v) for key, v in history.items()}


def _symbolic_checks(rng):
    """SymPy's gradients of the reconstruction loss (d = 3, k = 2, N = 3) against the layers."""
    d, k, N = 3, 2, 3
    X = S.symbol_array("x", (N, d))
    W = S.symbol_array("w", (k, d))
    V = S.symbol_array("v", (d, k))
    sX, sW, sV = sp.Matrix(X), sp.Matrix(W), sp.Matrix(V)
    R = sX - sX * sW.T * sV.T
    loss = sum(e ** 2 for e in R) / (2 * N)
    tied = loss.xreplace({V[i, j]: W[j, i] for i in range(d) for j in range(k)})
    fn = S.lambdify(S.flat_symbols([X, W, V]), [sp.diff(loss, s) for s in S.flat_symbols([W, V])]
                    + [sp.diff(tied, s) for s in S.flat_symbols([W])])
    x, w, v = rng.standard_normal((N, d)), rng.standard_normal((k, d)), rng.standard_normal((d, k))
    out = np.array([float(e) for e in fn(*S.flat_values([x, w, v]))])
    n = k * d
    ref_w, ref_v, ref_tied = out[:n].reshape(k, d), out[n:2 * n].reshape(d, k), out[2 * n:].reshape(k, d)
    model = Autoencoder(d, k, 0)
    model.W[...] = w
    model.V[...] = v
    _, gW, gV = model.loss_and_grads(x)
    gW, gV = gW.copy(), gV.copy()
    model.V[...] = w.T  # tied: V = W^T, and dL/dW = encoder gradient + decoder gradient transposed
    _, tW, tV = model.loss_and_grads(x)
    where = f"d = {d}, k = {k}, N = {N}, random point"
    tex = (r"L = \frac{1}{2N} \sum_n \| x_n - V W x_n \|^2:\quad \frac{\partial L}{\partial W} = "
           r"-\frac{1}{N} V^T R^T X,\ \frac{\partial L}{\partial V} = -\frac{1}{N} R^T X W^T,\ "
           r"R = X - X W^T V^T")
    measured = "rnncore.Linear backward (decoder then encoder)"
    tied_measured = "encoder gradient + decoder gradient transposed at V = W^T"
    checks = [
        array_check(FAMILY, f"{FAMILY}/symbolic/dW", f"dL/dW (encoder), {where}", "SymPy", measured, ref_w,
                    gW, GRAD_TOLERANCE, latex=tex),
        array_check(FAMILY, f"{FAMILY}/symbolic/dV", f"dL/dV (decoder), {where}", "SymPy", measured, ref_v,
                    gV, GRAD_TOLERANCE),
        array_check(FAMILY, f"{FAMILY}/symbolic/dW_tied", f"dL/dW with V = W^T substituted, {where}", "SymPy",
                    tied_measured, ref_tied, tW + tV.T, GRAD_TOLERANCE),
    ]
    return checks, tex


def _imbalance_prediction(W, V):
    """||V - W^T||_F predicted at an optimum W = A U^T, V = U A^-1 from Q = W W^T - V^T V."""
    q = np.linalg.eigvalsh(W @ W.T - V.T @ V)
    return float(np.sqrt(np.sum(np.sqrt(q ** 2 + 4.0) - 2.0)))


def run(quick=False):
    rng = np.random.default_rng(5)
    checks, tex = _symbolic_checks(rng)
    X = digits()
    N, d = X.shape
    sigma, U = pca(X)
    U_k = U[:, :K]
    # The loss depends on the data only through X^T X. --quick trains on the d x d triangular factor R
    # of X = QR (R^T R = X^T X): the same loss and gradients from 61 rows instead of 1797; checked here.
    rows = X
    if quick:
        rows = np.linalg.qr(X, mode="r")
        probe = Autoencoder(d, K, 3)
        on_x = [np.copy(a) for a in probe.loss_and_grads(X)[1:]] + [probe.loss_and_grads(X)[0]]
        on_r = [np.copy(a) for a in probe.loss_and_grads(rows, N)[1:]] + [probe.loss_and_grads(rows, N)[0]]
        checks.append(array_check(
            FAMILY, f"{FAMILY}/quick_reduction", "loss, dL/dW and dL/dV at the initial point: on the d x d "
            "factor R of X = QR (R^T R = X^T X, what --quick trains on) against the 1797 images",
            "the 1797 images", "the factor R", np.concatenate([np.ravel(a) for a in on_x]),
            np.concatenate([np.ravel(a) for a in on_r]), 1e-12))
    P = U_k @ U_k.T
    pca_loss = 0.5 * float(np.sum(sigma[K:]))
    lam = 0.02
    reg_loss = pca_loss + float(np.sum(lam - lam ** 2 / (2 * sigma[:K])))
    settings = {"untied": dict(lr=0.2, steps=3000),
                "weight_decay": dict(lr=0.5, steps=2000, lam=lam),
                "tied": dict(lr=0.25, steps=1000 if quick else 2000)}
    runs = {}
    for mode, kw in settings.items():
        model, (W0, V0), history = train(rows, mode, U_k=U_k, n=N, **kw)
        runs[mode] = (model.W.copy(), model.V.copy(), W0, V0, history)
    data_name = f"digits, N = {N}, d = {d}, k = {K}"
    trained = "trained autoencoder"

    def angle(A):
        """Largest principal angle (rad) between span(A) and the top-k eigenvectors."""
        return float(np.max(subspace_angles(A, U_k)))

    def bound(mode, what, compared, value, limit, reference="0", measured=trained):
        return bound_check(FAMILY, f"{FAMILY}/{mode}/{what}", compared, reference, measured, value, limit)

    def value(mode, what, compared, reference, ref, meas, tol, measured=trained):
        return value_check(FAMILY, f"{FAMILY}/{mode}/{what}", compared, reference, measured, ref, meas, tol)

    angles_of = "largest principal angle (rad) between the {} and the top-{} eigenvectors; {}"

    # untied, unregularised
    W, V, W0, V0, hist = runs["untied"]
    s = settings["untied"]
    where = f"untied, no weight decay, lr {s['lr']}, {s['steps']} steps; {data_name}"
    Q0, Q = W0 @ W0.T - V0.T @ V0, W @ W.T - V.T @ V
    checks += [
        bound("untied", "encoder_angle", angles_of.format("encoder's rows", K, where), angle(W.T),
              ANGLE_BOUND),
        bound("untied", "decoder_angle", angles_of.format("decoder's columns", K, where), angle(V),
              ANGLE_BOUND),
        value("untied", "loss", f"final loss against the PCA error 1/2 sum_(i>k) sigma_i; {where}",
              "PCA (numpy eigh of the covariance)", pca_loss, hist["loss"][-1], 1e-8),
        bound("untied", "projector", f"||V W - U_k U_k^T||_F: V W is the projector; {where}",
              np.linalg.norm(V @ W - P), 1e-6),
        value("untied", "V_minus_WT", "||V - W^T||_F (V = W^T fails: V = U A^-1, W = A U^T with A not "
              "orthogonal) against sqrt(sum_i sqrt(q_i^2 + 4) - 2), q = eig(W W^T - V^T V); " + where,
              "the invertible-map form of the optimum", _imbalance_prediction(W, V), np.linalg.norm(V - W.T),
              1e-6, measured="||V - W^T||_F"),
        value("untied", "imbalance_conserved", "||W W^T - V^T V||_F at the end against its initial value "
              f"(conserved by gradient flow; plain gradient descent drifts by O(lr)); {where}",
              "initial imbalance", np.linalg.norm(Q0), np.linalg.norm(Q), 0.02, measured="final imbalance"),
    ]
    untied_summary = (np.linalg.norm(V - W.T), np.linalg.norm(Q0), np.linalg.norm(Q))

    # weight decay
    W, V, _, _, hist = runs["weight_decay"]
    s = settings["weight_decay"]
    where = f"weight decay {lam}, lr {s['lr']}, {s['steps']} steps; {data_name}"
    checks += [
        bound("weight_decay", "encoder_angle", angles_of.format("encoder's rows", K, where), angle(W.T),
              ANGLE_BOUND),
        bound("weight_decay", "decoder_angle", angles_of.format("decoder's columns", K, where), angle(V),
              ANGLE_BOUND),
        bound("weight_decay", "V_minus_WT", f"||V - W^T||_F: the balanced optimum, V = W^T up to rounding; "
              f"{where}", np.linalg.norm(V - W.T), 1e-10, measured="||V - W^T||_F"),
        array_check(FAMILY, f"{FAMILY}/weight_decay/singular_values", "singular values of W against "
                    f"sqrt(1 - lambda/sigma_i), i <= k; {where}", "theory, with numpy's eigenvalues",
                    "numpy svd of the trained W", np.sqrt(1 - lam / sigma[:K]),
                    np.linalg.svd(W, compute_uv=False), 1e-8),
        value("weight_decay", "loss", "final regularised loss against 1/2 sum_(i>k) sigma_i + sum_(i<=k) "
              f"(lambda - lambda^2 / (2 sigma_i)); {where}", "theory", reg_loss, hist["loss"][-1], 1e-8),
    ]
    wd_gap = np.linalg.norm(V - W.T)

    # tied
    W, V, _, _, hist = runs["tied"]
    s = settings["tied"]
    where = f"tied weights, lr {s['lr']}, {s['steps']} steps; {data_name}"
    checks += [
        bound("tied", "angle", angles_of.format("rows of W (= columns of V)", K, where), angle(W.T),
              ANGLE_BOUND),
        bound("tied", "V_minus_WT", f"||V - W^T||_F (0 by construction); {where}", np.linalg.norm(V - W.T),
              0.0, measured="||V - W^T||_F"),
        bound("tied", "orthonormal_rows", f"||W W^T - I||_F; {where}", np.linalg.norm(W @ W.T - np.eye(K)),
              1e-8),
        value("tied", "loss", f"final loss against the PCA error; {where}", "PCA", pca_loss, hist["loss"][-1],
              1e-8),
    ]
    description = (
        "A linear autoencoder built from two `rnncore.Linear` layers (float64, no bias) is trained by plain "
        f"gradient descent on scikit-learn's 8x8 digits ({N} images; the {d} pixels that vary, standardised, "
        f"scaled so the covariance's largest eigenvalue is 1), with k = {K}, and compared with PCA of the "
        "same data. The layers' gradients are first checked against SymPy's on a small case."
        + (" This quick run trains on the d x d factor R of X = QR instead of the images' rows: the loss "
           "depends on the data only through X^T X = R^T R, so loss and gradients are the same (checked)."
           if quick else "") + "\n\n"
        "When V = W^T holds, precisely: (1) untied and unregularised, the minima are W = A U^T, V = U A^-1 "
        "for any invertible A, so V W is the projector and the loss is the PCA error, but V = W^T only if A "
        "is orthogonal. Gradient flow conserves Q = W W^T - V^T V; torch's default initialisation makes the "
        f"decoder's columns far longer than the encoder's rows (||Q||_F = {untied_summary[1]:.2f} at "
        f"initialisation, {untied_summary[2]:.2f} at the end), and the trained pair has ||V - W^T||_F = "
        f"{untied_summary[0]:.3f}, exactly what the invertible-map form predicts from Q. (2) With weight "
        f"decay {lam} the imbalance decays and the optimum is balanced: ||V - W^T||_F = {wd_gap:.1e}, "
        "rounding, with the singular values shrunk to sqrt(1 - lambda/sigma_i) and the same subspace. "
        "(3) Tied weights make V = W^T by construction; the rows become orthonormal. In all three cases "
        f"the subspace is the top-{K} principal subspace."
    )
    data = {"history": {mode: r[4] for mode, r in runs.items()}, "pca_loss": pca_loss, "reg_loss": reg_loss,
            "lam": lam, "k": K}
    formulas = [
        ("Reconstruction loss and its gradients", tex),
        ("Untied optimum and its imbalance", r"W = A U_k^T,\ V = U_k A^{-1}:\quad \|V - W^T\|_F^2 = "
         r"\sum_i \left(\sqrt{q_i^2 + 4} - 2\right),\ q = \mathrm{eig}(W W^T - V^T V)"),
        ("Weight decay optimum", r"V = W^T = U_k\,\mathrm{diag}\left(\sqrt{1 - \lambda/\sigma_i}\right) R,"
         r"\ R^T R = I"),
    ]
    return DerivationResult(FAMILY, "Linear autoencoder and PCA", description, checks, formulas, data=data)


def plot(result, out_dir):
    from derivations.plots import autoencoder_figure

    return [autoencoder_figure(result.data, out_dir)]
