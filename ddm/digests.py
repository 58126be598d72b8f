"""Payload digests of the products (``ddm.io``'s writers add them, its readers verify them):
the digest covers a payload's values, not its container's bytes, so it is stable across save and
load and names any changed value, dtype, shape or key.

* :func:`payload_digest`: a torch or .npz payload, walked canonically: dict keys sorted, lists
  and tuples in order, tensors and arrays by dtype, shape and raw bytes, plain scalars and strings
  by type and repr (length-prefixed tokens: no two walks give the same byte stream).
* :func:`json_digest`: a JSON object, the sha256 of its compact canonical JSON (sorted keys,
  ``(",", ":")`` separators).

Standard library only: torch and numpy are looked up in ``sys.modules`` (a payload holding a
tensor or an array was made by code that imported them).
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

__all__ = ["payload_digest", "json_digest"]


def _token(h, kind: str, text: str = "") -> None:
    """One length-prefixed token: no two walks give the same byte stream."""
    b = f"{kind}:{text}".encode()
    h.update(len(b).to_bytes(8, "little"))
    h.update(b)


def _walk(h, obj: Any) -> None:
    """Feed ``obj`` to ``h`` canonically (see :func:`payload_digest`)."""
    torch, np = sys.modules.get("torch"), sys.modules.get("numpy")
    if isinstance(obj, dict):
        keys = sorted(obj, key=lambda k: (type(k).__name__, repr(k)))
        _token(h, "dict", str(len(keys)))
        for k in keys:
            _walk(h, k)
            _walk(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        _token(h, type(obj).__name__, str(len(obj)))
        for x in obj:
            _walk(h, x)
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        _token(h, type(obj).__name__, repr(obj))
    elif torch is not None and isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().resolve_conj().resolve_neg().contiguous()
        _token(h, "tensor", f"{t.dtype}:{tuple(t.shape)}")
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif torch is not None and isinstance(obj, torch.dtype):
        _token(h, "dtype", str(obj))
    elif np is not None and isinstance(obj, np.ndarray) and obj.dtype != object:
        a = np.ascontiguousarray(obj)
        _token(h, "ndarray", f"{a.dtype.str}:{a.shape}")
        h.update(a.reshape(-1).view(np.uint8))
    elif np is not None and isinstance(obj, np.generic):
        _walk(h, np.asarray(obj))
    else:
        raise TypeError(f"cannot checksum a {type(obj).__name__} (plain containers, scalars, tensors and "
                        f"arrays only)")


def payload_digest(obj: Any) -> str:
    """sha256 (hex) of a torch or .npz payload by a canonical walk: dicts by sorted keys, lists
    and tuples in order (the type named), tensors and numpy arrays by dtype, shape and raw bytes
    (C order, on the CPU), None, bools, numbers, strings and bytes by type and ``repr``. Stable
    across save and load; any changed value, dtype, shape or key changes it."""
    h = hashlib.sha256()
    _walk(h, obj)
    return h.hexdigest()


def json_digest(obj: Any) -> str:
    """sha256 (hex) of the compact canonical JSON of ``obj`` (sorted keys, ``(",", ":")``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
