"""Latency and throughput of the API on this machine, and feedback under concurrent clients.

    python bench/serve.py                                   # the production model (registry)
    python bench/serve.py --model models/compressed/int8    # any model folder or compressed variant
    python bench/serve.py --model A --model B --out bench/serve.json

Each model is served by a real uvicorn server in a child process on 127.0.0.1 (so the clients
here do not share its interpreter), then:
  predict-1     sequential requests of one text each: latency p50/p95, requests/s
  predict-1 xC  C concurrent clients, one text per request: latency p50/p95, requests/s
  predict-32    sequential requests of 32 texts: latency p50/p95, texts/s
  feedback xC   C concurrent clients posting feedback: posts accepted vs rows stored
Texts come from --texts or data/splits/test.parquet (anonymized SMS) when it exists. Prints a markdown table
and writes JSON (--out). Loopback only; the counts are bounded by the flags.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKEN = "bench-token"


def _server(model: str, port: int, store_dir: str, threads: int) -> None:
    """Child process: serve `model` with the repository's params (serve, clean) on 127.0.0.1:port."""
    import uvicorn

    from tuneline.deploy.feedback import FeedbackStore, default_url
    from tuneline.params import load_params
    from apps.serve import create_app
    from tuneline.deploy.serving import build_anonymizer, load_model

    params = load_params(ROOT / "params.yaml")
    threads = threads if threads >= 0 else params.serve.threads
    if threads:
        import torch

        torch.set_num_threads(threads)
    predictor = load_model(model, Path(model).name, cache_dir=params.paths.cache)
    store = FeedbackStore(default_url(store_dir), busy_timeout_ms=params.feedback.busy_timeout_ms)
    app = create_app(predictor=predictor, store=store, anonymize=build_anonymizer(params.clean), p=params.serve,
                     token=TOKEN)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _texts(n: int, source: str | None) -> list[str]:
    test = Path(source) if source else ROOT / "data" / "splits" / "test.parquet"
    if test.exists():
        import pandas as pd

        t = pd.read_parquet(test)["text"].tolist()
        return [t[i % len(t)] for i in range(n)]
    return [f"message {i}: are we still on for dinner tonight? call me later" for i in range(n)]


def _stats(lat: list[float], seconds: float, n_req: int, n_texts: int) -> dict:
    a = np.array(lat) * 1000
    return {"requests": n_req, "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "requests_per_s": round(n_req / seconds, 1),
            "texts_per_s": round(n_texts / seconds, 1)}


def bench_model(model: str, args) -> dict:
    import httpx

    port = _free_port()
    store_dir = tempfile.mkdtemp(prefix="bench-feedback-")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "_server", model, str(port), store_dir, str(args.threads)],
                            env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                health = httpx.get(url + "/health", timeout=2).json()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server for {model} did not start")
                time.sleep(0.5)
        texts = _texts(max(args.requests, args.feedback_posts, 32), args.texts)
        out = {"model": model, "version": health["model_version"], "calibrated": health["calibrated"]}
        with httpx.Client(base_url=url, timeout=120) as c:
            for t in texts[:10]:  # warm-up
                c.post("/predict", json={"texts": [t]})
            lat, start = [], time.monotonic()
            for t in texts[:args.requests]:
                t0 = time.monotonic()
                r = c.post("/predict", json={"texts": [t]})
                r.raise_for_status()
                lat.append(time.monotonic() - t0)
            out["predict-1"] = _stats(lat, time.monotonic() - start, args.requests, args.requests)
            lat, start, n = [], time.monotonic(), max(3, args.requests // 8)
            for i in range(n):
                batch = texts[(i * 32) % len(texts):][:32]
                batch += texts[:32 - len(batch)]
                t0 = time.monotonic()
                c.post("/predict", json={"texts": batch}).raise_for_status()
                lat.append(time.monotonic() - t0)
            out["predict-32"] = _stats(lat, time.monotonic() - start, n, n * 32)

        def one(i: int) -> float:
            with httpx.Client(base_url=url, timeout=120) as c:
                t0 = time.monotonic()
                c.post("/predict", json={"texts": [texts[i % len(texts)]]}).raise_for_status()
                return time.monotonic() - t0

        start = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            lat = list(pool.map(one, range(args.requests)))
        out[f"predict-1 x{args.concurrency}"] = _stats(lat, time.monotonic() - start, args.requests, args.requests)

        def post(i: int) -> int:
            with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
                return c.post("/feedback", json={"text": texts[i % len(texts)], "label": health["labels"][i % 2],
                                                 "key": f"bench-{i}"}).status_code

        start = time.monotonic()
        with ThreadPoolExecutor(args.feedback_clients) as pool:
            codes = list(pool.map(post, range(args.feedback_posts)))
        seconds = time.monotonic() - start
        stored = sqlite3.connect(Path(store_dir) / "feedback.db").execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
        out["feedback"] = {"clients": args.feedback_clients, "posts": len(codes),
                           "accepted": sum(c == 201 for c in codes), "stored": stored,
                           "errors": sum(c >= 300 for c in codes), "posts_per_s": round(len(codes) / seconds, 1)}
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_server":
        _server(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", help="model folder (repeatable); default: the production version")
    ap.add_argument("--requests", type=int, default=200, help="requests per predict measurement")
    ap.add_argument("--concurrency", type=int, default=8, help="concurrent predict clients")
    ap.add_argument("--feedback-clients", type=int, default=16)
    ap.add_argument("--feedback-posts", type=int, default=400)
    ap.add_argument("--threads", type=int, default=-1, help="server torch threads (default: params serve.threads)")
    ap.add_argument("--texts", help="parquet with a text column (default: data/splits/test.parquet)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "serve.json"))
    args = ap.parse_args()
    models = args.model
    if not models:
        from tuneline.params import load_params
        from tuneline.deploy.registry import Registry

        reg = Registry(ROOT / load_params(ROOT / "params.yaml").paths.registry)
        if reg.production_dir() is None:
            sys.exit("no production model: run `python -m flows.retrain run` first, or pass --model")
        models = [str(reg.production_dir())]
    results = [bench_model(m, args) for m in models]
    import torch

    doc = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "platform": platform.platform(), "python": platform.python_version()},
           "args": vars(args), "results": results}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print("| model | measurement | requests | p50 ms | p95 ms | req/s | texts/s |\n|---|---|---|---|---|---|---|")
    for r in results:
        for k, v in r.items():
            if k.startswith("predict"):
                print(f"| {r['version']} | {k} | {v['requests']} | {v['p50_ms']} | {v['p95_ms']} | "
                      f"{v['requests_per_s']} | {v['texts_per_s']} |")
    print("\n| model | feedback clients | posts | accepted | stored | errors | posts/s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        f = r["feedback"]
        print(f"| {r['version']} | {f['clients']} | {f['posts']} | {f['accepted']} | {f['stored']} | {f['errors']} | "
              f"{f['posts_per_s']} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
