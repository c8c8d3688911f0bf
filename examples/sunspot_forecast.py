"""Real time-series forecasting: yearly sunspot numbers 1700-2008 (statsmodels' copy of the
SIDC series, public domain), or weekly Mauna Loa CO2 (``--data co2``).

An LSTM reads the series and predicts the next value at every step (a many-to-many regressor
trained with the mean squared error on random windows of the training years). It is evaluated
on the last years it never trained on, two ways:

- one step ahead: each year predicted from all the true years before it;
- free-running: from the end of the training years, the model feeds its own predictions back
  for the whole test period (``SequenceRegressor.forecast``).

Beside it: the naive forecasts (persistence: next = last; seasonal: next = one cycle ago) and
a least-squares AR(p) on the same lags. Root-mean-square errors in the data's units.

    python examples/sunspot_forecast.py            # well under a minute
    python examples/sunspot_forecast.py --data co2
"""

import argparse
import time

import numpy as np

from rnncore.data.batching import Batch
from rnncore.models.tagger import SequenceRegressor
from rnncore.nn import no_grad
from rnncore.train.clip import clip_grad_norm
from rnncore.train.optim import Adam


def load_series(name):
    import statsmodels.api as sm

    if name == "sunspots":
        df = sm.datasets.sunspots.load_pandas().data
        return df["SUNACTIVITY"].to_numpy(dtype=np.float64), df["YEAR"].astype(int).to_numpy(), 11, "year"
    df = sm.datasets.co2.load_pandas().data
    s = df["co2"].interpolate().bfill()  # 59 missing weeks, filled linearly
    monthly = s.resample("MS").mean()
    return monthly.to_numpy(dtype=np.float64), monthly.index.year.to_numpy(), 12, "month"


def ar_fit_predict(series, n_train, p):
    """Least-squares AR(p) with intercept fitted on the training part; one-step predictions for
    every later position."""
    rows = np.array([series[t - p:t][::-1] for t in range(p, n_train)])
    A = np.column_stack([np.ones(len(rows)), rows])
    coef, *_ = np.linalg.lstsq(A, series[p:n_train], rcond=None)
    preds = np.array([coef[0] + coef[1:] @ series[t - p:t][::-1] for t in range(n_train, len(series))])
    return preds, coef


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="sunspots", choices=["sunspots", "co2"])
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--window", type=int, default=40, help="training window length")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    series, years, season, unit = load_series(args.data)
    n = len(series)
    n_train = int(round(n * (1 - args.test_fraction)))
    # differences for CO2 (a trend the network should not have to extrapolate), levels for sunspots
    diff = args.data == "co2"
    values = np.diff(series, prepend=series[0]) if diff else series
    mu, sd = values[:n_train].mean(), values[:n_train].std()
    z = (values - mu) / sd
    print(f"{args.data}: {n} {unit}s ({years[0]}-{years[-1]}); training on the first {n_train}, testing on "
          f"the last {n - n_train} ({years[n_train]}-{years[-1]})")

    model = SequenceRegressor(1, 1, hidden_size=args.hidden, cell=args.cell, num_layers=args.layers,
                              seed=args.seed)
    opt = Adam(model, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    W = min(args.window, n_train - 1)
    t1 = time.perf_counter()
    for step in range(args.steps):
        starts = rng.integers(0, n_train - W, size=args.batch_size)
        win = np.stack([z[s:s + W + 1] for s in starts], axis=1)[..., None].astype(np.float32)  # (W+1, B, 1)
        batch = Batch(inputs=win[:-1], targets=win[1:], lengths=np.full(args.batch_size, W))
        model.zero_grad()
        result = model.loss_and_backward(batch)
        clip_grad_norm(opt, 1.0)
        opt.step()
        if (step + 1) % 500 == 0:
            print(f"step {step + 1}: training MSE (standardised) {result.loss:.4f}")
    train_seconds = time.perf_counter() - t1

    def to_series(pred_z, t_index):
        """Standardised predictions of values[t] -> predictions of series[t]."""
        v = pred_z * sd + mu
        return series[t_index - 1] + v if diff else v

    test_t = np.arange(n_train, n)
    actual = series[test_t]
    model.eval()
    with no_grad():  # one step ahead: the model reads the true series up to t-1
        pred = model(z[:-1, None, None].astype(np.float32))[:, 0, 0]
    one_step = to_series(pred[test_t - 1], test_t)
    free = model.forecast(z[:n_train].astype(np.float32), n - n_train)[:, 0] * sd + mu
    free_run = series[n_train - 1] + np.cumsum(free) if diff else free

    p = 2 * season if args.data == "co2" else 9
    ar_pred, _ = ar_fit_predict(series, n_train, p)
    persistence = series[test_t - 1]
    seasonal = series[test_t - season]
    seasonal_free = np.array([series[n_train - season + (k % season)] for k in range(n - n_train)])
    if diff:  # the seasonal naive forecast of a trending series: last cycle plus the yearly rise
        rise = series[n_train - season:n_train].mean() - series[n_train - 2 * season:n_train - season].mean()
        seasonal_free = seasonal_free + rise * (1 + np.arange(n - n_train) // season)
    print(f"\ntraining took {train_seconds:.1f} s; test RMSE over {n - n_train} {unit}s:")
    print(f"  {'one step ahead':<34}{'free-running':>14}")
    print(f"  {'persistence (last value)':<24}{rmse(persistence, actual):10.3f}")
    print(f"  {f'seasonal naive (t - {season})':<24}{rmse(seasonal, actual):10.3f}{rmse(seasonal_free, actual):14.3f}")
    print(f"  {f'AR({p}), least squares':<24}{rmse(ar_pred, actual):10.3f}")
    print(f"  {f'{args.cell.upper()} regressor':<24}{rmse(one_step, actual):10.3f}{rmse(free_run, actual):14.3f}")
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return {"rnn_one_step": rmse(one_step, actual), "persistence": rmse(persistence, actual),
            "ar": rmse(ar_pred, actual), "rnn_free": rmse(free_run, actual),
            "seasonal_free": rmse(seasonal_free, actual)}


if __name__ == "__main__":
    main()
