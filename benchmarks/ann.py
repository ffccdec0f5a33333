"""Approximate k-NN (IVF-Flat, IVF-SQ8, HNSW) and float16 storage against exact search, on
galleries of real face embeddings grown with synthetic faces drawn like them.

    python benchmarks/ann.py --faces FACE_INDEX --sizes 1000000 10000000 --work /tmp/ann \
        [--plot docs/img/ann-recall-latency.png]

FACE_INDEX is `lookalike index ../shared/lfw/images --model face.onnx --out FACE_INDEX`
with face.onnx from `lookalike export --architecture dlib-resnet --mirror` (every LFW
image, 128-d). Queries are real faces: one photo of each of ``--queries`` people with at
least two, spread over the names, held out of the gallery; their other photos stay in.

The gallery is every other real embedding plus synthetic rows drawn to match them,
so that a query's neighbours are face-like distractors, not random vectors:
  * identities: the mean embedding of each real person with at least two photos, fitted
    with a Gaussian mixture (``--components`` full-covariance components); a synthetic
    person's centre is drawn from it;
  * photos per person: drawn from LFW's own counts of photos per person;
  * each photo: its person's centre plus a residual from the pooled within-person
    covariance (each real photo minus its person's mean, over people with two or more).
The run prints how far a real query's nearest synthetic row is against its nearest
real row of another person: equal medians mean the distractors are as close as real ones.

Measured per gallery size, every searcher in the same run: build seconds (the structure,
from the mapped matrix), size on disk, open seconds (what a server pays at start and at
each reload, without the manifest's checksum), heap added by opening (RssAnon: faiss'
structures live in the heap; an exact float32 matrix stays mapped, in the page cache,
its size on disk), recall@10 against exact float32 search, and k-NN latency: one query
at a time (p50, p99) and batches of 64 (milliseconds per query). Searchers are measured
below the manifest (server/backends/approximate.py's ``open_searcher`` on the
index folder's matrix, as MemmapBackend opens them); `large_gallery.py` serves the
gallery end to end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from sklearn.mixture import GaussianMixture

from lookalike.server.backends.approximate import open_searcher
from lookalike.server.index import ann
from lookalike.server.index.store import ANN_FILE, GalleryIndex, Layout, Manifest

K = 10
BATCH = 64
BLOCK = 250_000


def loadavg() -> str:
    """Another process on these 2 cores shows in every latency: the load says when."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_open(place: Path, features: Path, layout: Layout, queries: np.ndarray) -> dict:
    """In a fresh process (this one's allocator holds freed structures): seconds to open the
    searcher, heap it added, and file pages it made resident over 20 single queries."""
    np.save(place / "queries.npy", queries[:20])
    spec = {"place": str(place), "features": str(features), "layout": layout.__dict__}
    answer = subprocess.run(
        [sys.executable, __file__, "--open-one", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(answer.stdout.strip().splitlines()[-1])


def open_one(spec: dict) -> None:
    place, features = Path(spec["place"]), Path(spec["features"])
    layout = Layout(**spec["layout"])
    queries = np.load(place / "queries.npy")
    heap, mapped = rss_mb("RssAnon"), rss_mb("RssFile")
    started = time.perf_counter()
    searcher = open_searcher(folder_index(place, features, layout), "brute")
    open_s = time.perf_counter() - started
    heap = rss_mb("RssAnon") - heap
    for query in queries:
        searcher.search(query[np.newaxis], K, 0)
    mapped = rss_mb("RssFile") - mapped
    print(json.dumps({"open_s": open_s, "heap_mb": heap, "mapped_mb": mapped}))


def held_out(faces: GalleryIndex, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows kept in the gallery, rows held out as queries, each row's person number): one
    held-out photo of each of ``queries`` people with two or more."""
    labels = np.array([item.label for item in faces.manifest.items])
    _, person = np.unique(labels, return_inverse=True)
    counts = np.bincount(person)
    several = np.flatnonzero(counts >= 2)
    chosen = several[np.linspace(0, len(several) - 1, min(queries, len(several))).astype(int)]
    held = np.array(sorted(int(np.flatnonzero(person == p)[0]) for p in chosen))
    return np.setdiff1d(np.arange(len(labels)), held), held, person


def split_faces(
    faces: GalleryIndex, queries: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(gallery rows, their person numbers, query rows, theirs): ``held_out``'s split."""
    keep, held, person = held_out(faces, queries)
    features = np.asarray(faces.features, np.float32)
    return features[keep], person[keep], features[held], person[held]


class FaceModel:
    """Synthetic faces: identity centres from a Gaussian mixture, photos around them."""

    def __init__(self, rows: np.ndarray, person: np.ndarray, components: int, seed: int) -> None:
        counts = np.bincount(person)
        several = counts[person] >= 2
        means = np.zeros((counts.size, rows.shape[1]))
        np.add.at(means, person, rows)
        means /= np.maximum(counts, 1)[:, None]
        residuals = rows[several] - means[person[several]]
        # photos of one person: n - 1 degrees of freedom each
        dof = sum(c - 1 for c in counts if c >= 2)
        within = residuals.T @ residuals / dof
        self.within = np.linalg.cholesky(within + 1e-9 * np.eye(len(within)))
        self.identities = GaussianMixture(
            components, covariance_type="full", reg_covar=1e-5, random_state=seed
        ).fit(means[counts >= 2])
        self.photos_per_person = counts
        self.rng = np.random.default_rng(seed)

    def draw(self, count: int) -> np.ndarray:
        people = []
        total = 0
        while total < count:  # people, each with a count of photos drawn from LFW's
            n = self.rng.choice(self.photos_per_person, size=max(1024, count // 2))
            people.append(n)
            total += int(n.sum())
        per = np.concatenate(people)
        per = per[: np.searchsorted(np.cumsum(per), count) + 1]
        centres, _ = self.identities.sample(len(per))
        centres = centres[self.rng.permutation(len(per))]  # sample() orders by component
        rows = np.repeat(centres, per, axis=0)[:count]
        rows += self.rng.standard_normal(rows.shape) @ self.within.T
        return rows.astype(np.float32)


def write_gallery(folder: Path, real: np.ndarray, model: FaceModel, rows: int) -> Path:
    """features.npy of ``rows``: the real rows then synthetic ones, scattered in blocks."""
    path = folder / "features.npy"
    if path.exists() and np.load(path, mmap_mode="r").shape[0] == rows:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    matrix = np.lib.format.open_memmap(
        folder / "features.tmp.npy", "w+", np.float32, (rows, real.shape[1])
    )
    matrix[: len(real)] = real
    for start in range(len(real), rows, BLOCK):
        stop = min(rows, start + BLOCK)
        matrix[start:stop] = model.draw(stop - start)
    matrix.flush()
    del matrix
    os.replace(folder / "features.tmp.npy", path)
    return path


def as_float16(path: Path) -> tuple[Path, float]:
    out = path.with_name("features-f16.npy")
    started = time.perf_counter()
    if not out.exists():
        source = np.load(path, mmap_mode="r")
        half = np.lib.format.open_memmap(out, "w+", np.float16, source.shape)
        for start in range(0, len(source), BLOCK):
            half[start : start + BLOCK] = source[start : start + BLOCK]
        half.flush()
        del half
    return out, time.perf_counter() - started


def folder_index(folder: Path, features: Path, layout: Layout) -> GalleryIndex:
    """An index folder as the server maps it, with a manifest that lists no items."""
    matrix = np.load(features, mmap_mode="r")
    manifest = Manifest(
        version="bench",
        model_name="dlib-resnet-mirror",
        model_fingerprint="",
        input_size=150,
        embedding_size=matrix.shape[1],
        crop=None,  # type: ignore[arg-type]
        gallery_root="",
        split="all",
        rows=len(matrix),
        features_sha256="",
        items=[],
        layout=layout,
    )
    return GalleryIndex(path=folder, manifest=manifest, features=matrix)


def warm(path: Path) -> None:
    """The mapped matrix into the page cache, as on a server that has run a while."""
    matrix = np.load(path, mmap_mode="r")
    for start in range(0, len(matrix), BLOCK):
        np.asarray(matrix[start : start + BLOCK]).sum()


def latency(search, queries: np.ndarray, breadth: int, single: int) -> tuple[float, float, float]:
    """p50, p99 ms of one query; ms per query in batches of 64."""
    search(queries[:2], K, breadth)
    times = []
    for query in queries[:single]:
        started = time.perf_counter()
        search(query[np.newaxis], K, breadth)
        times.append((time.perf_counter() - started) * 1e3)
    batches = [queries[i : i + BATCH] for i in range(0, len(queries) - BATCH + 1, BATCH)][:4]
    started = time.perf_counter()
    for batch in batches:
        search(batch, K, breadth)
    per_query = (time.perf_counter() - started) * 1e3 / (BATCH * len(batches))
    return statistics.median(times), float(np.percentile(times, 99)), per_query


def search_all(search, queries: np.ndarray, breadth: int) -> np.ndarray:
    """The rows of the k nearest of every query, 100 queries a call."""
    return np.concatenate(
        [search(queries[i : i + 100], K, breadth)[1] for i in range(0, len(queries), 100)]
    )


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def run_size(
    args: argparse.Namespace, rows: int, real: np.ndarray, model, queries
) -> dict[str, list[tuple[float, float]]]:
    """Measure every chosen searcher at ``rows``; returns (p50 ms, recall@10) by searcher,
    one point per breadth."""
    folder = args.work / f"gallery-{rows}"
    started = time.perf_counter()
    f32 = write_gallery(folder, real, model, rows)
    print(f"\n## {rows:,} rows ({len(real):,} real, {rows - len(real):,} synthetic)")
    print(f"gallery written or found in {time.perf_counter() - started:.0f} s")
    f16, half_s = as_float16(f32)
    warm(f32)
    exact = open_searcher(folder_index(folder, f32, Layout()), "faiss")
    truth = search_all(exact.search, queries, 0)
    del exact
    gc.collect()
    print(
        "| searcher | storage | breadth | recall@10 | p50 ms (1 query) | p99 ms | ms/query "
        "(batch 64) | build s | open s | heap MB | mapped MB | disk MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    configs = [(Layout(), "brute"), (Layout(storage="float16"), "brute")]
    configs += [(Layout(storage="float32", index_type="ivf-flat"), "")]
    configs += [(Layout(storage="float16", index_type="ivf-sq8"), "")]
    configs += [(Layout(storage="float16", index_type="ivf-pq"), "")]
    if rows <= args.hnsw_max_rows:
        configs += [(Layout(storage="float32", index_type="hnsw"), "")]
    chosen = set(args.searchers)
    configs = [
        (layout, algorithm)
        for layout, algorithm in configs
        if f"{layout.index_type}-{layout.storage}" in chosen
    ]
    points: dict[str, list[tuple[float, float]]] = {}
    for layout, algorithm in configs:
        features = f16 if layout.storage == "float16" else f32
        place = folder / layout.index_type
        place.mkdir(exist_ok=True)
        layout = ann.resolved(layout, rows)
        build_s = half_s if layout.storage == "float16" else 0.0
        if layout.approximate:
            if not (place / ANN_FILE).exists() or args.rebuild:
                started = time.perf_counter()
                ann.write(ann.build(np.load(features, mmap_mode="r"), layout), place)
                build_s += time.perf_counter() - started
            else:
                build_s = float("nan")  # built by an earlier run: not timed
        opened = measure_open(place, features, layout, queries)
        searcher = open_searcher(folder_index(place, features, layout), algorithm or "brute")
        disk = features.stat().st_size + (
            (place / ANN_FILE).stat().st_size if layout.approximate else 0
        )
        breadths = [0]
        if layout.index_type.startswith("ivf"):
            shares = (64, 32, 24, 16, 12, 8, 4)  # 1/24 and 1/12: between the powers of two
            breadths = sorted({layout.lists // d for d in shares} | {layout.breadth})
        elif layout.index_type == "hnsw":
            breadths = sorted({64, 128, layout.breadth, 512})
        single = args.single if layout.approximate else args.exact_single
        for breadth in breadths:
            found = search_all(searcher.search, queries, breadth)
            p50, p99, batch = latency(searcher.search, queries, breadth, single)
            name = f"{searcher.name}" + (f" ({layout.lists} lists)" if layout.lists else "")
            found_share = recall(found, truth)
            points.setdefault(f"{name}, {layout.storage}", []).append((p50, found_share))
            print(
                f"| {name} | {layout.storage} | {breadth or '-'} | {found_share:.4f} | "
                f"{p50:.2f} | {p99:.2f} | {batch:.3f} | {build_s:.0f} | {opened['open_s']:.1f} | "
                f"{opened['heap_mb']:,.0f} | {opened['mapped_mb']:,.0f} | {disk / 2**20:,.0f} |",
                flush=True,
            )
        del searcher
        gc.collect()
    return points


def plot_tradeoff(measured: dict[int, dict[str, list[tuple[float, float]]]], path: Path) -> None:
    """recall@10 against one query's p50, a panel per gallery size, a line per searcher
    through its breadths; the issue's bar (recall 0.98 within 10 ms) drawn in."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5 * len(measured), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    for number, (rows, points) in enumerate(sorted(measured.items()), start=1):
        axes = figure.add_subplot(1, len(measured), number)
        for name, line in points.items():
            latencies, recalls = zip(*line, strict=True)  # in breadth order
            axes.plot(latencies, recalls, marker="o", label=name)
        axes.axhline(0.98, color="grey", linestyle="--", linewidth=1)
        axes.axvline(10, color="grey", linestyle=":", linewidth=1)
        axes.set_xscale("log")
        axes.set_xlabel("one query's p50, ms (log scale)")
        axes.set_ylabel("recall@10 against exact search")
        axes.set_title(f"{rows:,} rows of 128-d faces, 2 CPU cores", fontsize="medium")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small", loc="lower right")
    figure.savefig(path, format="png", dpi=110)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, help="index of every LFW image")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/ann-bench"))
    parser.add_argument("--queries", type=int, default=500, help="real held-out faces (500)")
    parser.add_argument("--components", type=int, default=8, help="mixture components (8)")
    parser.add_argument("--single", type=int, default=200, help="single queries timed (200)")
    parser.add_argument("--exact-single", type=int, default=40, help="for exact searchers (40)")
    parser.add_argument("--hnsw-max-rows", type=int, default=2_000_000)
    parser.add_argument(
        "--searchers",
        nargs="+",
        default=[
            "flat-float32",
            "flat-float16",
            "ivf-flat-float32",
            "ivf-sq8-float16",
            "ivf-pq-float16",
            "hnsw-float32",
        ],
        help="which searchers to measure, as INDEX_TYPE-STORAGE (default: all)",
    )
    parser.add_argument("--rebuild", action="store_true", help="build structures found again")
    parser.add_argument("--plot", type=Path, help="a PNG of recall@10 against latency")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--open-one", help=argparse.SUPPRESS)  # the child of measure_open
    args = parser.parse_args()
    if args.open_one:
        return open_one(json.loads(args.open_one))
    threads = faiss.omp_get_max_threads()
    print(f"faiss {faiss.__version__}, {threads} threads, {os.cpu_count()} CPUs, {loadavg()}")
    faces = GalleryIndex.open(args.faces)
    real, person, queries, query_person = split_faces(faces, args.queries)
    model = FaceModel(real, person, args.components, args.seed)
    check_distractors(real, person, queries, query_person, model)
    measured = {}
    for rows in args.sizes:
        measured[rows] = run_size(args, rows, real, model, queries)
        print(f"after {rows:,} rows: {loadavg()}")
    if args.plot:
        plot_tradeoff(measured, args.plot)


def check_distractors(real, person, queries, query_person, model: FaceModel) -> None:
    """Median distance from a real query to its nearest real row of its own person and of
    another, and to its nearest synthetic row, in galleries of the same size."""
    synthetic = model.draw(len(real))
    index = faiss.IndexFlatL2(real.shape[1])
    index.add(synthetic)
    to_synthetic = np.sqrt(index.search(queries, 1)[0][:, 0])
    distances = np.sqrt(np.maximum(0, ((queries[:, None, :] - real[None]) ** 2).sum(-1)))
    own = person[None, :] == query_person[:, None]
    same = np.where(own, distances, np.inf).min(1)
    other = np.where(own, np.inf, distances).min(1)
    print(
        f"median distance of a real query to: its own person's nearest other photo "
        f"{np.median(same):.3f}, "
        f"nearest real row of another person {np.median(other):.3f}, nearest synthetic "
        f"row {np.median(to_synthetic):.3f} (galleries of {len(real):,} rows each)"
    )


if __name__ == "__main__":
    main()
