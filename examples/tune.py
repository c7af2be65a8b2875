"""A tuning trial: gets its parameters as ``--lr=... --depth=...`` and reports accuracy."""

from __future__ import annotations

import argparse

from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.model_selection import cross_val_score

import raydeck

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--depth", type=int, required=True)
args = parser.parse_args()

x, y = make_classification(n_samples=300, n_features=4, random_state=1)
model = GradientBoostingClassifier(learning_rate=args.lr, max_depth=args.depth, n_estimators=20)
raydeck.report(accuracy=float(cross_val_score(model, x, y, cv=3).mean()))
