"""Parameter trees as safetensors files: small, portable, readable by any framework (and the HF Hub).

A tree is a model's pure dict of `nnx.Param` arrays (`nnx.to_pure_dict`); its leaves are stored flat under
dotted keys (`layers.blocks.0.attn.key.kernel`). Reading goes by the tree the caller expects, so the keys'
types (an int block index) come from the model, every array must be there with its shape, and each is
cast to the dtype the model wants (a bfloat16 file gives float32 parameters equal to the rounded values).
Files are read and written as bytes through etils epath, so a bucket URL works like a local path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy
from etils import epath

from musenet_jax.errors import UserError

# safetensors dtype names -> numpy dtypes (safetensors' own numpy reader has no bfloat16).
_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "U32": np.uint32,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
STORE_DTYPES: dict[str, Any] = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


def _key_name(path: tuple[Any, ...]) -> str:
    return ".".join(str(getattr(part, "key", getattr(part, "idx", part))) for part in path)


def flatten_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted key -> leaf."""
    return {_key_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def save_tensors(
    path: str | epath.PathLike,
    tree: Mapping[str, Any],
    dtype: str = "float32",
    metadata: Mapping | None = None,
) -> int:
    """Writes `tree`'s arrays, floating ones cast to `dtype` ("float32" or "bfloat16"); returns the bytes
    written."""
    store = STORE_DTYPES[dtype]
    flat = {}
    for name, leaf in flatten_tree(tree).items():
        array = np.asarray(jax.device_get(leaf))
        flat[name] = array.astype(store) if np.issubdtype(array.dtype, np.floating) else array
    data = safetensors.numpy.save(flat, metadata=dict(metadata or {}))
    epath.Path(path).write_bytes(data)
    return len(data)


def read_tensors(path: str | epath.PathLike) -> dict[str, np.ndarray]:
    """Dotted key -> numpy array, as stored."""
    data = epath.Path(path).read_bytes()
    try:
        entries = safetensors.deserialize(data)
    except Exception as err:  # the reader's own error types differ across versions
        raise UserError(f"{path} is not a readable safetensors file ({str(err).splitlines()[0]})") from None
    out = {}
    for name, view in entries:
        if view["dtype"] not in _DTYPES:
            raise UserError(
                f"{path}: tensor {name} has dtype {view['dtype']}, which musenet-jax does not store"
            )
        out[name] = np.frombuffer(bytes(view["data"]), dtype=_DTYPES[view["dtype"]]).reshape(view["shape"])
    return out


def load_tensors(path: str | epath.PathLike, expected: Mapping[str, Any]) -> dict[str, Any]:
    """The tree shaped like `expected` (leaves with .shape, .dtype and, optionally, .sharding) filled from
    the file: each array cast to the expected dtype and placed on the expected sharding. A missing, extra
    or differently shaped array is one `UserError` naming it (the file is another model's)."""
    stored = read_tensors(path)
    wanted = flatten_tree(expected)
    missing = sorted(set(wanted) - set(stored))
    extra = sorted(set(stored) - set(wanted))
    if missing or extra:
        said = [
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"extra {', '.join(extra[:3])}" if extra else "",
        ]
        raise UserError(
            f"{path} holds another model's parameters ({'; '.join(s for s in said if s)}); "
            "its config.json and this model's differ"
        )
    for name, leaf in wanted.items():
        if tuple(stored[name].shape) != tuple(leaf.shape):
            raise UserError(
                f"{path}: {name} has shape {tuple(stored[name].shape)}, this model's is {tuple(leaf.shape)}; "
                "its config.json and this model's differ"
            )

    def fill(key_path: tuple[Any, ...], leaf: Any) -> Any:
        array = stored[_key_name(key_path)].astype(leaf.dtype)
        sharding = getattr(leaf, "sharding", None)
        return jax.device_put(array, sharding) if sharding is not None else jax.numpy.asarray(array)

    return jax.tree_util.tree_map_with_path(fill, expected)
