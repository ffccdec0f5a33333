"""A bounded soak of `lookalike serve` on loopback, with hostile traffic mixed in.

    python scripts/soak.py --model model.onnx --index index/ [--seconds 150]

Starts the server (search token, admin token, on a free loopback port) and for
``--seconds`` runs client threads whose calls are: 60% good searches of gallery
images, 20% bad inputs (junk bytes, a truncated JPEG, k=0), 10% calls without a
token, and 10% calls that open and never send their request (kept open, up to
``--max-idle`` at once). Every ``--reload-every`` seconds the index is reloaded
over the admin RPC, by name and by default in turn. An enroller adds new faces
(one bad image in five among them), erases earlier ones with their files, and
compacts now and then. The server works on a copy of the gallery and the index,
so the soak changes neither. A probe checks health every 0.2 s with a 1 s
deadline, and the server's resident memory is sampled every second. At the end
every acknowledged add must be listed and every erased face must be absent from
ListImages, Search and the gallery folder. Prints:

    unknown=0 lost_good=0 lost_adds=0 resurrected=0 health_max_ms=... rss_max_mb=...

and exits 1 unless there was no UNKNOWN, no lost good call, no lost or resurrected
row and no failed probe.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.client import LookalikeError, NewImage, SearchClient
from lookalike.server.index.publish import publish
from lookalike.server.index.samples import person_image
from lookalike.v1 import search_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' server helpers
from tests.serving import free_port, rss_mb, wait_until_serving  # noqa: E402

SEARCH = "/lookalike.v1.SearchService/Search"


def gallery_images(index: Path, count: int) -> list[bytes]:
    manifest = json.loads((index / "manifest.json").read_text())
    root = Path(manifest["gallery_root"])
    rows = manifest["items"][:count]
    return [(root / row[2]).read_bytes() for row in rows]


def copy_gallery(index: Path, folder: Path) -> tuple[Path, Path]:
    """(gallery root, served index) copies to change: the index published as a version."""
    manifest = json.loads((index / "manifest.json").read_text())
    root = folder / "gallery"
    shutil.copytree(manifest["gallery_root"], root, symlinks=True)
    staging = folder / "indexes" / ".staging"
    shutil.copytree(index.resolve(), staging)
    served = folder / "indexes" / "idx"
    publish(staging, served, manifest["version"])
    return root, served


def new_face(n: int) -> bytes:
    stream = io.BytesIO()
    person_image(5000 + n, n % 3).save(stream, "JPEG", quality=90)
    return stream.getvalue()


class Soak:
    def __init__(self, target: str, images: list[bytes], args: argparse.Namespace) -> None:
        self.target, self.images, self.args = target, images, args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.codes: Counter[tuple[str, str]] = Counter()  # (kind, code)
        self.lost_good: list[str] = []
        self.health_ms: list[float] = []
        self.health_failures: list[str] = []
        self.idle_calls: list[grpc.Future] = []
        self.reloads: list[str] = []
        self.added: dict[str, bytes] = {}  # acknowledged adds not erased since
        self.erased: dict[str, tuple[bytes, str]] = {}  # id -> (image, path in the gallery)
        self.changes: Counter[str] = Counter()
        self.release = threading.Event()
        self.idle_channel = grpc.insecure_channel(target)

    def count(self, kind: str, code: grpc.StatusCode) -> None:
        with self.lock:
            self.codes[(kind, code.name)] += 1

    def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        token, bad = self.args.token, self.bad_inputs()
        with (
            SearchClient(self.target, token=token, timeout=60) as good,
            SearchClient(self.target, retries=0, timeout=30) as anonymous,
        ):
            while not self.stop.is_set():
                roll = rng.random()
                if roll < 0.6:
                    self.good_call(good, rng.choice(self.images))
                elif roll < 0.8:
                    data, k = rng.choice(bad)
                    self.call("bad", lambda d=data, k=k: good.search(d, k=k))
                elif roll < 0.9:
                    image = rng.choice(self.images)
                    self.call("anonymous", lambda i=image: anonymous.search(i, k=3))
                else:
                    self.open_idle_call()

    def bad_inputs(self) -> list[tuple[bytes, int]]:
        image = self.images[0]
        return [(b"junk" * 100, 3), (image[: len(image) // 2], 3), (image, 0), (b"", 3)]

    def good_call(self, client: SearchClient, image: bytes) -> None:
        try:
            client.search(image, k=5)
            self.count("good", grpc.StatusCode.OK)
        except LookalikeError as error:
            self.count("good", error.code)
            with self.lock:
                self.lost_good.append(f"{error.code.name}: {error.message}")

    def call(self, kind: str, work) -> None:  # noqa: ANN001 (a call of the client)
        try:
            work()
            self.count(kind, grpc.StatusCode.OK)
        except LookalikeError as error:
            self.count(kind, error.code)

    def open_idle_call(self) -> None:
        with self.lock:
            if len(self.idle_calls) >= self.args.max_idle:
                self.idle_calls.pop(0).cancel()  # oldest goes, a new one comes
            start = self.idle_channel.stream_unary(
                SEARCH,
                request_serializer=search_pb2.SearchRequest.SerializeToString,
                response_deserializer=search_pb2.SearchResponse.FromString,
            )
            self.idle_calls.append(start.future(self.nothing()))
            self.codes[("never_sending", "OPENED")] += 1

    def nothing(self) -> Iterator[search_pb2.SearchRequest]:
        self.release.wait()
        return
        yield

    def probe(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while not self.stop.wait(0.2):
                started = time.perf_counter()
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if answer.status != health_pb2.HealthCheckResponse.SERVING:
                        self.health_failures.append(f"status {answer.status}")
                except grpc.RpcError as error:
                    self.health_failures.append(error.code().name)
                self.health_ms.append((time.perf_counter() - started) * 1e3)

    def enroller(self) -> None:
        """Adds (a bad image among every five), erasures with their files, compactions."""
        rng = random.Random(7)
        n = 0
        with SearchClient(self.target, token=self.args.admin_token, timeout=60) as admin:
            while not self.stop.wait(0.3):
                faces = [new_face(n + i) for i in range(4)]
                n += 4
                batch = [NewImage(face, f"soak{n % 7}") for face in faces]
                batch.insert(rng.randrange(5), NewImage(b"not an image", "soak"))
                self.change("add", lambda b=batch: self.add(admin, b))
                if self.added and rng.random() < 0.5:
                    victim = rng.choice(sorted(self.added))
                    self.change("remove", lambda v=victim: self.remove(admin, v))
                if rng.random() < 0.05:
                    self.change("compact", admin.compact)

    def change(self, kind: str, work) -> None:  # noqa: ANN001 (a call of the client)
        try:
            work()
            self.count(kind, grpc.StatusCode.OK)
        except LookalikeError as error:
            self.count(kind, error.code)

    def add(self, admin: SearchClient, batch: list[NewImage]) -> None:
        for new, result in zip(batch, admin.add_images(batch), strict=True):
            self.changes[f"add_{result.result}"] += 1
            if result.result == "added":
                self.added[result.id] = new.image

    def remove(self, admin: SearchClient, victim: str) -> None:
        (result,) = admin.remove_images(ids=[victim], delete_files=True)
        self.changes[f"remove_{result.result}"] += 1
        if result.result == "removed":
            self.erased[victim] = (self.added.pop(victim), result.removed[0].path)

    def audit(self, root: Path) -> tuple[int, int]:
        """(acknowledged adds missing, erased faces found again) after the run."""
        with (
            SearchClient(self.target, token=self.args.admin_token, timeout=120) as admin,
            SearchClient(self.target, token=self.args.token, timeout=120) as searcher,
        ):
            listed = {entry.id for entry in admin.list_images()}
            lost = len(set(self.added) - listed)
            back = set(self.erased) & listed
            for image_id, (image, path) in self.erased.items():
                found = {m.id for m in searcher.search(image, k=5).matches}
                if image_id in found or (root / path).exists():
                    back.add(image_id)
        return lost, len(back)

    def reloader(self) -> None:
        names = ["", "idx"]  # by default, and by name under --index-root
        with SearchClient(self.target, token=self.args.admin_token, timeout=120) as admin:
            while not self.stop.wait(self.args.reload_every):
                try:
                    names.reverse()
                    version, size = admin.reload_index(names[0])
                    self.reloads.append(f"OK {version} ({size})")
                except LookalikeError as error:
                    self.reloads.append(error.code.name)
                    self.count("reload", error.code)

    def close(self) -> None:
        self.release.set()
        with self.lock:
            for call in self.idle_calls:
                call.cancel()
        self.idle_channel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--reload-every", type=float, default=30)
    parser.add_argument("--max-idle", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.token, args.admin_token = "soak-search-token", "soak-admin-token"

    folder = Path(tempfile.mkdtemp(prefix="lookalike-soak-"))
    root, index = copy_gallery(args.index, folder)
    (folder / "token").write_text(args.token)
    (folder / "admin").write_text(args.admin_token)
    port = free_port()
    target = f"127.0.0.1:{port}"
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lookalike.client.cli",
            "serve",
            *("--model", str(args.model), "--index", str(index)),
            *("--index-root", str(index.parent), "--gallery-root", str(root)),
            *("--host", "127.0.0.1", "--port", str(port), "--device", args.device),
            *("--auth-token-file", str(folder / "token")),
            *("--admin-token-file", str(folder / "admin")),
            *("--log-level", "INFO"),
        ],
        stderr=log,
    )
    try:
        wait_until_serving(target, server)
        soak = Soak(target, gallery_images(args.index, 50), args)
        rss = [rss_mb(server.pid)]
        threads = [
            threading.Thread(target=soak.worker, args=(n,), daemon=True)
            for n in range(args.threads)
        ]
        threads += [
            threading.Thread(target=soak.probe, daemon=True),
            threading.Thread(target=soak.reloader, daemon=True),
            threading.Thread(target=soak.enroller, daemon=True),
        ]
        for thread in threads:
            thread.start()
        ends = time.monotonic() + args.seconds
        while time.monotonic() < ends and server.poll() is None:
            time.sleep(1)
            rss.append(rss_mb(server.pid))
        soak.stop.set()
        for thread in threads:
            thread.join(timeout=120)
        soak.close()
        lost_adds, resurrected = soak.audit(root)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        log.close()
    unknown = sum(n for (_, code), n in soak.codes.items() if code == "UNKNOWN")
    server_unknown = (folder / "server.log").read_text().count("code=UNKNOWN")
    health_max = max(soak.health_ms, default=float("nan"))
    print(
        f"unknown={unknown} server_unknown={server_unknown} lost_good={len(soak.lost_good)} "
        f"lost_adds={lost_adds} resurrected={resurrected} added={len(soak.added)} "
        f"erased={len(soak.erased)} "
        f"health_checks={len(soak.health_ms)} health_max_ms={health_max:.1f} "
        f"health_failures={len(soak.health_failures)} rss_start_mb={rss[0]:.0f} "
        f"rss_max_mb={max(rss):.0f} rss_end_mb={rss[-1]:.0f} exit={server.returncode}"
    )
    for (kind, code), n in sorted(soak.codes.items()):
        print(f"  {kind:>13} {code:<20} {n}")
    print(f"  reloads: {', '.join(soak.reloads)}")
    print(f"  changes: {dict(sorted(soak.changes.items()))}")
    for lost in soak.lost_good[:5]:
        print(f"  lost: {lost}")
    print(f"  server log: {folder / 'server.log'}")
    healthy = not soak.health_failures and unknown == server_unknown == 0
    healthy = healthy and lost_adds == resurrected == 0
    return 0 if healthy and not soak.lost_good and server.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
