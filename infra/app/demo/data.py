"""A seeded, realistic churn dataset with slice columns (nothing is downloaded).

Churn depends on tenure, charges, support calls and contract type the way real
churn does, non-linearly: new customers churn most, price hurts only on monthly
contracts, support calls matter past a threshold, and high charges hurt more in
one region. So a network has something to find that the linear baseline cannot,
and per-slice metrics differ. ``shift`` moves the
live-traffic distribution (more support calls, higher charges) to trigger drift,
and makes the second dataset version a genuinely different population.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REGIONS = ("north", "south", "east", "west")
CONTRACTS = ("monthly", "yearly", "two-year")
FEATURES = ("tenure_months", "monthly_charges", "support_calls", "contract", "region")


def generate_churn(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    region = rng.choice(REGIONS, size=n, p=[0.35, 0.25, 0.25, 0.15])
    contract = rng.choice(CONTRACTS, size=n, p=[0.5, 0.3, 0.2])
    tenure = rng.gamma(2.0, 12.0, size=n).round(0)
    charges = (rng.normal(65 + 25 * shift, 18, size=n)).clip(15, 150).round(2)
    calls = rng.poisson(1.5 + 2.5 * shift, size=n)
    monthly = contract == "monthly"
    logit = (-1.6 + 2.6 * np.exp(-tenure / 6.0)
             + 0.06 * (charges - 65) * monthly - 0.01 * (charges - 65) * ~monthly
             + 1.8 * (calls >= 3) + 1.0 * (calls >= 5)
             - 1.0 * (contract == "yearly") - 2.2 * (contract == "two-year")
             + 1.2 * ((region == "west") & (charges > 80)) - 0.3 * (region == "north"))
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({
        "tenure_months": tenure,
        "monthly_charges": charges,
        "support_calls": calls.astype("int64"),
        "contract": contract,
        "region": region,
        "churned": np.where(churned, "yes", "no"),
    })


def request_rows(n: int, seed: int, shifted_share: float) -> list[dict[str, list]]:
    """Single-row inference requests (raw features, as clients send them); a share is shifted."""
    n_shift = int(n * shifted_share)
    normal = generate_churn(n - n_shift, seed)
    shifted = generate_churn(n_shift, seed + 1, shift=1.0)
    df = pd.concat([normal, shifted], ignore_index=True)
    return [{c: [row[c]] for c in FEATURES} for row in df.to_dict("records")]
