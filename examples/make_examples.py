"""Makes what the README's examples use, under examples/: two small CSV files and two churn
models (scikit-learn and XGBoost) fitted on the same four features f0..f3.

    python examples/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent
FEATURES = ["f0", "f1", "f2", "f3"]


def main() -> None:
    x, y = make_classification(n_samples=200, n_features=4, random_state=7)
    customers = pd.DataFrame(x, columns=FEATURES).round(4)
    customers.insert(0, "id", range(1, len(customers) + 1))
    customers["churned"] = y
    rng = np.random.default_rng(7)
    orders = pd.DataFrame(
        {
            "id": range(1, 51),
            "region": rng.choice(["eu", "us", "apac"], size=50),
            "total": rng.uniform(5, 500, size=50).round(2),
        }
    )
    (HERE / "data").mkdir(exist_ok=True)
    customers.to_csv(HERE / "data" / "customers.csv", index=False)
    orders.to_csv(HERE / "data" / "orders.csv", index=False)

    sklearn_dir = HERE / "models" / "churn-sklearn"
    xgb_dir = HERE / "models" / "churn-xgb"
    sklearn_dir.mkdir(parents=True, exist_ok=True)
    xgb_dir.mkdir(parents=True, exist_ok=True)
    features = customers[FEATURES]
    joblib.dump(LogisticRegression().fit(features, y), sklearn_dir / "model.joblib")
    booster = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(features, y)
    booster.save_model(xgb_dir / "model.json")
    print(f"wrote {HERE / 'data'} and {HERE / 'models'}")


if __name__ == "__main__":
    main()
