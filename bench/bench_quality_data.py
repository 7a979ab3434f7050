"""The quality suite's datasets: real (not synthetic) tables that ship inside pinned PyPI packages.

scikit-learn's bundled sets, ``palmerpenguins`` and ``vega_datasets`` (the
``bench`` extra pins them). Between them: binary, multiclass and regression
tasks, categorical columns and missing values in features. Rows whose *label*
is missing are dropped (a label cannot be imputed); missing features stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd


@dataclass(frozen=True)
class QualityDataset:
    name: str
    task: str
    label: str
    source: str
    load: Callable[[], pd.DataFrame]


def _sklearn(loader: str, classify: bool) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from sklearn import datasets

        frame = getattr(datasets, loader)(as_frame=True).frame
        frame.columns = [str(c).replace("/", "_") for c in frame.columns]   # dataset column names have no slashes
        if classify:
            frame["target"] = "class_" + frame["target"].astype(str)
        return frame
    return load


def _penguins(label: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from palmerpenguins import load_penguins

        df = load_penguins()
        return df.dropna(subset=[label]).reset_index(drop=True)
    return load


def _cars() -> pd.DataFrame:
    from vega_datasets import data

    df = data.cars().drop(columns=["Name", "Year"])
    return df.dropna(subset=["Miles_per_Gallon"]).reset_index(drop=True)


def _seattle_weather() -> pd.DataFrame:
    from vega_datasets import data

    df = data.seattle_weather()
    df["month"] = pd.to_datetime(df.pop("date")).dt.month.astype(str)
    return df


def _barley() -> pd.DataFrame:
    from vega_datasets import data

    df = data.barley()
    df["year"] = df["year"].astype(str)
    return df


SUITE: tuple[QualityDataset, ...] = (
    QualityDataset("breast_cancer", "binary", "target", "scikit-learn load_breast_cancer",
                   _sklearn("load_breast_cancer", True)),
    QualityDataset("penguins_sex", "binary", "sex", "palmerpenguins (nulls, categoricals)", _penguins("sex")),
    QualityDataset("wine", "multiclass", "target", "scikit-learn load_wine", _sklearn("load_wine", True)),
    QualityDataset("penguins_species", "multiclass", "species", "palmerpenguins (nulls, categoricals)",
                   _penguins("species")),
    QualityDataset("seattle_weather", "multiclass", "weather", "vega_datasets seattle_weather (categorical month)",
                   _seattle_weather),
    QualityDataset("diabetes", "regression", "target", "scikit-learn load_diabetes",
                   _sklearn("load_diabetes", False)),
    QualityDataset("cars_mpg", "regression", "Miles_per_Gallon", "vega_datasets cars (nulls, categorical Origin)",
                   _cars),
    QualityDataset("barley_yield", "regression", "yield", "vega_datasets barley (categoricals only)", _barley),
)
QUICK = ("penguins_species", "diabetes")
