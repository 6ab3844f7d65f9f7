"""The model registry's layout in the object store, read by the serving pods (`refund-batch fetch-model`)
and written by training (training/registry.py: publish, the promotion gate, rollback):

    models/<version>/model-store/refund-classifier.mar   what TorchServe (or KServe's storageUri) loads
    models/<version>/config/config.properties            KServe's TorchServe runtime's config
    models/<version>/model.pt, model.json, metrics.json, model_card.md, ...   weights and evidence
    models/<version>/decision.json           the promotion gate's first decision on it (training/registry.py)
    models/production.json   the production version, the versions it replaced, every decision

No torch here: the batch image, which has none, fetches the serving pods' model with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import obstore
from obstore.exceptions import AlreadyExistsError, PreconditionError
from obstore.store import LocalStore, ObjectStore

from common.objectstore import read_object

MAR_NAME = "refund-classifier.mar"
MAR_KEY = f"model-store/{MAR_NAME}"  # KServe's TorchServe runtime expects this layout under storageUri
KSERVE_CONFIG_KEY = "config/config.properties"  # ... and this, from kserve_config
PRODUCTION = "production.json"
RETRAIN = "retrain.json"  # what the retraining job trained a version on and what the gate decided (training/retrain.py)
MODEL_FILES = (
    "model.pt",
    "model.json",
    "index_to_name.json",
    "metrics.json",
    "model_card.md",
    "history.json",
    "args.json",
    "confusion_matrix.png",
    "training_curve.png",
)
# Written by train.py; the rest of MODEL_FILES are evidence and may be missing from older models.
REQUIRED_FILES = ("model.pt", "model.json", "index_to_name.json", "metrics.json")


class RegistryError(Exception):
    """A registry operation that cannot be done as asked; the message says why."""


class Registry:
    def __init__(self, store: ObjectStore, prefix: str = "models/") -> None:
        self.store = store
        self.prefix = prefix.rstrip("/") + "/"

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def versions(self) -> list[str]:
        """Published versions, oldest first (versions are UTC timestamps: they sort by time)."""
        listing = obstore.list_with_delimiter(self.store, self.prefix.rstrip("/"))
        found = (PurePosixPath(folder).name for folder in listing["common_prefixes"])
        return sorted(version for version in found if self.is_published(version))

    def is_published(self, version: str) -> bool:
        """A version exists once its .mar, uploaded last, is there."""
        return self.exists(self.key(version, MAR_KEY))

    def exists(self, key: str) -> bool:
        try:
            obstore.head(self.store, key)
        except FileNotFoundError:
            return False
        return True

    def resolve(self, name: str) -> str:
        """A version by name: itself, `latest` (newest published) or `production`."""
        if name == "production":
            version = self.state()["version"]
            if version is None:
                raise RegistryError("no model is in production yet: promote one first")
            return version
        if name == "latest":
            versions = self.versions()
            if not versions:
                raise RegistryError("the registry holds no model: publish one first")
            return versions[-1]
        if not self.is_published(name):
            published = ", ".join(self.versions()) or "none"
            raise RegistryError(f"no version {name!r} in the registry; published: {published}")
        return name

    def create(self, version: str, name: str, data: bytes) -> None:
        try:
            obstore.put(self.store, self.key(version, name), data, mode="create")
        except AlreadyExistsError:
            raise RegistryError(
                f"{self.key(version, name)} already exists: version {version} is being (or was partly) "
                "uploaded by another publish; versions are immutable"
            ) from None

    def download(self, version: str, destination: Path) -> Path:
        """The version's model files into destination (for evaluation); returns destination."""
        destination.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            key = self.key(version, name)
            if name in REQUIRED_FILES or self.exists(key):
                (destination / name).write_bytes(read_object(self.store, key))
        return destination

    def fetch_mar(self, version: str, model_store: Path) -> Path:
        """The version's .mar as model_store/refund-classifier.mar, for TorchServe's --model-store."""
        model_store.mkdir(parents=True, exist_ok=True)
        partial = model_store / f".{MAR_NAME}.partial"
        partial.write_bytes(read_object(self.store, self.key(version, MAR_KEY)))
        return partial.replace(model_store / MAR_NAME)

    def record_retraining(self, entry: dict) -> None:
        """entry (version, at, reviewed_returns, catalogue_images, promoted, reason) as the version's retrain.json."""
        self.create(entry["version"], RETRAIN, json.dumps(entry, indent=1).encode())

    def retrainings(self, limit: int) -> list[dict]:
        """The newest `limit` retraining outcomes (each version's retrain.json), newest first: one listing of
        the registry, not a request per version."""
        keys = sorted(
            meta["path"]
            for page in obstore.list(self.store, prefix=self.prefix)
            for meta in page
            if PurePosixPath(meta["path"]).name == RETRAIN
        )
        return [json.loads(read_object(self.store, key)) for key in reversed(keys[-limit:])]

    def state(self) -> dict:
        """production.json: {"version", "previous": [older productions, newest last], "history": [...]}."""
        return self.read_state()[0]

    def read_state(self) -> tuple[dict, str | None]:
        """The state and the ETag it was read at (None: there is no production.json yet)."""
        try:
            answer = obstore.get(self.store, self.key(PRODUCTION))
        except FileNotFoundError:
            return {"version": None, "previous": [], "history": []}, None
        return json.loads(bytes(answer.bytes())), answer.meta["e_tag"]

    def save_state(self, state: dict, read_at: str | None) -> None:
        """Write production.json only if it is still as read at ETag `read_at` (None: still absent)."""
        key, data = self.key(PRODUCTION), json.dumps(state, indent=1).encode()
        try:
            with self._local_lock():
                if isinstance(self.store, LocalStore) and read_at is not None:
                    # A local folder has no conditional update: compare under the lock every writer takes.
                    if obstore.head(self.store, key)["e_tag"] != read_at:
                        raise PreconditionError("production.json changed")
                    obstore.put(self.store, key, data)
                else:
                    obstore.put(self.store, key, data, mode="create" if read_at is None else {"e_tag": read_at})
        except (AlreadyExistsError, PreconditionError):
            raise RegistryError(
                "production changed while this command ran (another promotion or rollback); "
                "nothing was written: run it again"
            ) from None

    @contextlib.contextmanager
    def _local_lock(self) -> Iterator[None]:
        if not isinstance(self.store, LocalStore):
            yield
            return
        folder = Path(self.store.prefix) / self.prefix
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".production.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield
