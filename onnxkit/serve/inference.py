"""The inference path that HTTP and gRPC share: find the model, decode the request, queue it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np

from onnxkit.errors import suggest
from onnxkit.runtime import Model
from onnxkit.serve import protocol
from onnxkit.serve.batcher import Batcher
from onnxkit.serve.errors import RequestError
from onnxkit.serve.protocol import MODEL_VERSION, InferRequest
from onnxkit.serve.repository import Served

OFFLOAD_BYTES = 256 * 1024  # payloads larger than this are decoded and encoded off the event loop


def find_model(batchers: Mapping[str, Batcher], name: str, version: str = "") -> Batcher:
    """The batcher serving model `name` ("" version: the current one); RequestError(404) if none."""
    if name not in batchers:
        if isinstance(batchers, Served) and (why := batchers.unserved(name)):  # was "no model 'iris'. Did you mean..."
            raise RequestError(404, f"model {name!r} is not served now ({why}); load it with POST "
                                    f"/v2/repository/models/{name}/load (gRPC: RepositoryModelLoad)")
        raise RequestError(404, f"no model {name!r}.{suggest(name, batchers)} Served: {', '.join(batchers)}")
    if version not in ("", MODEL_VERSION):
        raise RequestError(404, f"model {name!r} has no version {version!r}; it has {MODEL_VERSION!r}")
    return batchers[name]


async def infer(
    batcher: Batcher, decode: Callable[[Model], Awaitable[InferRequest]], scope: dict | None = None
) -> tuple[InferRequest, dict[str, np.ndarray]]:
    """Receive and decode a request for `batcher`'s model, queue it, and wait for its outputs.

    While `decode` runs, the batcher knows a request is on its way and may hold a batch for it.
    The request runs on the model it is decoded for, even if a new one is loaded meanwhile.
    `scope`: an HTTP request's, so that the request is dropped if its client leaves (`Batcher.infer`).
    """
    model = batcher.model
    batcher.receiving()
    try:
        request = await decode(model)
    finally:
        batcher.received()
    return request, await batcher.infer(request.feeds, model, scope)


async def offload(size: int, function: Callable[..., Any], *args: Any, heavy: bool = False) -> Any:
    """Call `function` inline for small payloads, in a thread for large ones or `heavy` work (decoding for a model
    that tokenizes text: 240 KB of short texts held the event loop for 0.3 s; 0.04 s in a thread)."""
    if heavy or size > OFFLOAD_BYTES:
        return await asyncio.to_thread(function, *args)
    return function(*args)


def model_config(batchers: Mapping[str, Batcher], name: str, version: str = "") -> dict[str, Any]:
    """Model `name`'s configuration in Triton's form, with its batcher's limits (RequestError(404) if unknown)."""
    batcher = find_model(batchers, name, version)
    return protocol.model_config(batcher.model, batcher.max_batch_size, batcher.max_delay)


def statistics(batchers: Mapping[str, Batcher], name: str = "", version: str = "") -> dict[str, Any]:
    """The statistics extension's reply: every served model's entry, or `name`'s (RequestError(404) if unknown)."""
    chosen = [find_model(batchers, name, version)] if name else list(batchers.values())
    return {"model_stats": [b.statistics.as_dict(b.name, MODEL_VERSION) for b in chosen]}
