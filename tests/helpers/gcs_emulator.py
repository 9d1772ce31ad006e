"""A local Google Cloud Storage for tests: PyPI's `gcp-storage-emulator`, in memory, on a free port.

Commands reach it as they would reach GCS: gcsfs (under etils epath) and google-cloud-storage (under
tensorboardX) through `STORAGE_EMULATOR_HOST`, TensorStore (under Orbax) through `TENSORSTORE_GCS_HTTP_URL`.
One gap of the emulator is filled here: its downloads do not carry the `x-goog-generation` header that
real GCS sends and TensorStore's OCDBT reads (without it every Orbax checkpoint fails to save).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from gcp_storage_emulator import server as emulator
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

BUCKET = "musenet-test"
_DOWNLOAD = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
    _DOWNLOAD(request, response, storage, *args, **kwargs)
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except NotFound:
        return
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj["metageneration"])


def _add_generation_headers() -> None:
    objects.download = _download_with_generation  # also reached from `get` with alt=media
    for _, handlers in emulator.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is _DOWNLOAD:
                handlers[method] = _download_with_generation


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gcs_emulator() -> Iterator[dict[str, str]]:
    """Runs the emulator with an empty bucket `BUCKET`; yields the environment that points clients at it."""
    _add_generation_headers()
    port = _free_port()
    server = emulator.create_server("localhost", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    url = f"http://localhost:{port}"
    try:
        yield {
            "STORAGE_EMULATOR_HOST": url,
            "TENSORSTORE_GCS_HTTP_URL": url,
            "GOOGLE_CLOUD_PROJECT": "musenet-test",
            # gcsfs's probe for zonal/hierarchical buckets asks a gRPC API the emulator lacks (60 s timeout)
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }
    finally:
        server.stop()
